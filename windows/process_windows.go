package windows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer"
)

// ImagePath returns the full path of the executable that process pid runs.
func ImagePath(pid uint32) (string, error) {
	h, err := openToQuery(pid)
	if err != nil {
		return "", err
	}
	defer xwin.CloseHandle(h)
	path, err := imagePath(h)
	if err != nil {
		return "", fmt.Errorf("querying image of process %d: %w", pid, err)
	}
	return path, nil
}

// openToQuery opens process pid for what any user may ask of any process
// (PROCESS_QUERY_LIMITED_INFORMATION): its image, times, memory and
// token. Only the System and Idle processes and protected ones refuse it.
func openToQuery(pid uint32) (xwin.Handle, error) {
	h, err := xwin.OpenProcess(xwin.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return 0, fmt.Errorf("opening process %d: %w", pid, err)
	}
	return h, nil
}

// imagePath returns the full path of the executable that process h runs.
func imagePath(h xwin.Handle) (string, error) {
	// Most paths fit in MAX_PATH; long ones get a second try at the
	// longest a path can be.
	var err error
	for _, size := range []uint32{xwin.MAX_PATH, xwin.MAX_LONG_PATH} {
		buf := make([]uint16, size)
		n := size
		err = xwin.QueryFullProcessImageName(h, 0, &buf[0], &n)
		if err == nil {
			return xwin.UTF16ToString(buf[:n]), nil
		}
		if !errors.Is(err, xwin.ERROR_INSUFFICIENT_BUFFER) {
			break
		}
	}
	return "", err
}

// imageBaseName is the file name of an image path.
func imageBaseName(path string) string {
	return path[strings.LastIndexAny(path, `\/`)+1:]
}

const (
	// nameTTL bounds how long a pid's name is trusted: Windows reuses
	// pids.
	nameTTL = 10 * time.Second
	// maxNames bounds the cache; a full cache starts over.
	maxNames = 4096
)

type nameEntry struct {
	comm      tracer.Comm
	expiresNs int64
}

// nameCache keeps the image base names of recent pids, so that an event
// costs no system call and no allocation once its pid has been seen.
type nameCache struct {
	entries map[uint32]nameEntry
}

func newNameCache() *nameCache {
	return &nameCache{entries: make(map[uint32]nameEntry)}
}

// comm returns pid's image base name as of nowNs, empty if the process
// cannot be opened (gone, protected, or the Idle and System processes).
func (c *nameCache) comm(pid uint32, nowNs int64) tracer.Comm {
	if e, ok := c.entries[pid]; ok && nowNs < e.expiresNs {
		return e.comm
	}
	if len(c.entries) >= maxNames {
		clear(c.entries)
	}
	var comm tracer.Comm
	if path, err := ImagePath(pid); err == nil {
		comm = tracer.CommFrom(imageBaseName(path))
	}
	c.entries[pid] = nameEntry{comm: comm, expiresNs: nowNs + int64(nameTTL)}
	return comm
}
