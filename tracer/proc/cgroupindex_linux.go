package proc

import (
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// maxCgroups bounds the cgroup ids kept: a busy Kubernetes node has a
	// few thousand cgroups.
	maxCgroups = 1 << 16
	// rewalkEvery bounds how often a cgroup id nobody knows makes the
	// index walk the cgroup2 mount again: ids of removed cgroups keep
	// arriving in events for a while.
	rewalkEvery = time.Second
)

// cgroupIndex maps cgroup ids to paths, for events that carry only the id.
// It learns from a walk of the cgroup2 mount, redone on a miss, and from
// every cgroup a Resolver stats.
type cgroupIndex struct {
	root string // the cgroup2 mount; "" where there is none

	mu     sync.Mutex
	paths  map[uint64]string
	walked time.Time
}

// idOf is the id of the cgroup at path (as /proc/PID/cgroup writes it):
// its directory's inode number, which is its kernfs node id, the id
// bpf_get_current_cgroup_id returns. 0 where it cannot be read.
func (x *cgroupIndex) idOf(path string) uint64 {
	var st unix.Stat_t
	if x.root == "" || path == "" || unix.Stat(filepath.Join(x.root, path), &st) != nil {
		return 0
	}
	x.mu.Lock()
	if x.paths == nil {
		x.paths = map[uint64]string{}
	}
	if len(x.paths) < maxCgroups {
		x.paths[st.Ino] = path
	}
	x.mu.Unlock()
	return st.Ino
}

// path is the path of the cgroup id.
func (x *cgroupIndex) path(id uint64) (string, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if p, ok := x.paths[id]; ok {
		return p, true
	}
	if x.root == "" || time.Since(x.walked) < rewalkEvery {
		return "", false
	}
	x.walk()
	p, ok := x.paths[id]
	return p, ok
}

// walk replaces the index with every cgroup under the mount, up to
// maxCgroups, forgetting those removed since the last walk.
func (x *cgroupIndex) walk() {
	x.walked = time.Now()
	x.paths = map[uint64]string{}
	filepath.WalkDir(x.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // removed while walked, or a control file
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(x.root, path)
		x.paths[info.Sys().(*syscall.Stat_t).Ino] = filepath.Join("/", rel)
		if len(x.paths) >= maxCgroups {
			return fs.SkipAll
		}
		return nil
	})
}
