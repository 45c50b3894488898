package api

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/proc"
)

// peerRule says who may use the API: root, and the members of the group
// porttrace when it exists (gid >= 0).
type peerRule struct {
	gid int
}

// restrict makes the socket at path root's and the group porttrace's, mode
// 0660. The per-connection check stands on its own; this keeps others from
// even connecting.
func restrict(path string) (peerRule, error) {
	rule := peerRule{gid: proc.GroupID(Group)}
	if err := os.Chown(path, 0, max(rule.gid, 0)); err != nil {
		return rule, fmt.Errorf("giving %s to root: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return rule, fmt.Errorf("restricting %s: %w", path, err)
	}
	return rule, nil
}

// check returns the peer's pid (in porttrace's pid namespace), and why it
// may not use the API, or nil.
func (r peerRule) check(c net.Conn) (int32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("reading the peer's credentials: %w", credErr)
	}
	if cred.Uid == 0 || (r.gid >= 0 && (int(cred.Gid) == r.gid || inGroup(cred.Pid, r.gid))) {
		return cred.Pid, nil
	}
	return cred.Pid, fmt.Errorf("uid %d may not read socket owners: run as root or as a member of the group %s", cred.Uid, Group)
}

// inGroup reports whether process pid has gid among its supplementary
// groups ("Groups:\t4 24 27" in /proc/PID/status).
func inGroup(pid int32, gid int) bool {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Groups:"); ok {
			for _, g := range strings.Fields(rest) {
				if g == strconv.Itoa(gid) {
					return true
				}
			}
			return false
		}
	}
	return false
}
