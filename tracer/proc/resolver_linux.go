package proc

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// maxProcesses bounds the Resolver's cache: more than the processes
	// holding sockets on any machine porttrace has met, and a few MiB.
	maxProcesses = 4096
	// maxUsers bounds the user names kept: a machine has far fewer users
	// with processes.
	maxUsers = 1024
	// maxCmdline bounds a command line kept, as ps bounds what it reads:
	// some are megabytes (classpaths), and the cache holds thousands.
	maxCmdline = 64 << 10
	// maxAncestors ends a walk up the parents that never reaches an init
	// (each step may read a process that exited and whose pid came back).
	maxAncestors = 64
)

// A Resolver reads and keeps the facts about processes, by Identity.
//
// It is the one owner of its cache and safe for concurrent use: every
// method takes its lock only to look up or store, never while reading
// /proc (except to evict, once every maxProcesses/4 new processes at
// most), and returns copies: callers share nothing with it. Use one per
// program so that the cache serves everyone.
type Resolver struct {
	pageSize uint64
	cgroups  cgroupIndex

	mu    sync.Mutex
	limit int // maxProcesses, lowered by tests
	procs map[Identity]*cached
	uses  uint64 // counts lookups, to find the least recently used
	users map[uint32]string
}

type cached struct {
	p    Process
	used uint64
}

// NewResolver makes a Resolver. It finds the cgroup v2 mount now; where
// there is none, processes' cgroup ids stay 0 and CgroupByID knows none.
func NewResolver() *Resolver {
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	return &Resolver{
		pageSize: uint64(os.Getpagesize()),
		cgroups:  cgroupIndex{root: cgroup2Mount(mountinfo)},
		limit:    maxProcesses,
		procs:    map[Identity]*cached{},
		users:    map[uint32]string{},
	}
}

// Identify is the Identity of the process pid names now; ErrExited where
// none does, or a zombie (exited, not yet reaped by its parent).
func Identify(pid uint32) (Identity, error) {
	st, err := readStat(pid)
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, StartNs: st.startNs()}, nil
}

// Resolve describes the process pid names now; ErrExited where none does.
func (r *Resolver) Resolve(pid uint32) (Process, error) {
	st, err := readStat(pid)
	if err != nil {
		return Process{}, err
	}
	return r.resolve(Identity{PID: pid, StartNs: st.startNs()}, st)
}

// Lookup describes the process id: as it is now while it runs; as it was,
// with Exited set, if it has exited since the Resolver last saw it; and
// ErrExited if it exited before.
func (r *Resolver) Lookup(id Identity) (Process, error) {
	st, err := readStat(id.PID)
	if err == nil && id.Same(Identity{PID: id.PID, StartNs: st.startNs()}) {
		return r.resolve(id.Key(), st)
	}
	if err != nil && !errors.Is(err, ErrExited) {
		return Process{}, err
	}
	p, ok := r.cached(id.Key())
	if !ok {
		return Process{}, fmt.Errorf("pid %d: %w", id.PID, ErrExited)
	}
	p.Exited = true
	return p, nil
}

// resolve describes the running process id, whose stat was just read.
func (r *Resolver) resolve(id Identity, st stat) (Process, error) {
	p, hit := r.cached(id)
	if hit && execSince(p, st) {
		hit = false
	}
	if !hit {
		var err error
		if p, err = r.read(id, st); err != nil {
			return Process{}, err
		}
	}
	p.RSSBytes = st.rssPages * r.pageSize
	p.Name = st.comm // a process may rename itself (prctl PR_SET_NAME)
	if !hit || p.PPID != st.ppid {
		// New, or its parent exited and it was handed to a reaper.
		p.PPID, p.Ancestors = st.ppid, ancestors(st.ppid)
		r.store(p.copy())
	}
	return p, nil
}

// execSince says the facts cached as p no longer describe the process
// whose stat is st: it has run exec since (an entry script's `exec nginx`
// keeps the pid and start time, and changes the name), or p was read in
// the middle of an exec, when the name is already the new program's and
// the command line not yet set (a kernel thread has neither exe nor
// command line, and is never re-read for it). A process renaming itself
// costs one read more.
func execSince(p Process, st stat) bool {
	return p.Name != st.comm || (p.Cmdline == "" && p.Exe != "")
}

// cached is a copy of what the cache holds about id.
func (r *Resolver) cached(id Identity) (Process, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.procs[id]
	if c == nil {
		return Process{}, false
	}
	r.uses++
	c.used = r.uses
	return c.p.copy(), true
}

// copy is p sharing nothing with the cache: callers may change what they
// get.
func (p Process) copy() Process {
	p.Ancestors = slices.Clone(p.Ancestors)
	if p.Container != nil {
		c := *p.Container
		p.Container = &c
	}
	return p
}

// read reads the facts about the process id that do not change while it
// runs.
func (r *Resolver) read(id Identity, st stat) (Process, error) {
	dir := "/proc/" + strconv.FormatUint(uint64(id.PID), 10)
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return Process{}, procError(id.PID, err)
	}
	status, err := parseStatus(b)
	if err != nil {
		return Process{}, fmt.Errorf("pid %d: %w", id.PID, err)
	}
	p := Process{
		Identity:  id,
		UID:       status.uid,
		User:      r.userName(status.uid),
		StartTime: wallClock(id.StartNs),
		Cmdline:   readCmdline(dir + "/cmdline"),
	}
	// Unreadable without privileges over the process: left empty.
	p.Exe, _ = os.Readlink(dir + "/exe")
	if b, err := os.ReadFile(dir + "/cgroup"); err == nil {
		var v2 string
		v2, p.Cgroup = parseProcCgroup(b)
		p.Cgroup.ID = r.cgroups.idOf(v2)
	}
	// The reads above name a pid, not a process: if it exited and its pid
	// was taken meanwhile, they may describe two processes.
	if now, err := readStat(id.PID); err != nil || now.startTicks != st.startTicks {
		return Process{}, fmt.Errorf("pid %d: %w", id.PID, ErrExited)
	}
	return p, nil
}

// store keeps p, making room first when the cache is full.
func (r *Resolver) store(p Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.procs[p.Identity]; !ok && len(r.procs) >= r.limit {
		r.evict()
	}
	r.uses++
	r.procs[p.Identity] = &cached{p: p, used: r.uses}
}

// evict makes room for a quarter of the cache: first by forgetting the
// processes that have exited, then the least recently used ones. Exited
// processes are kept until then, so that Lookup can still name the owner
// of a connection that outlived it.
func (r *Resolver) evict() {
	for id := range r.procs {
		if now, err := Identify(id.PID); err != nil || now != id {
			delete(r.procs, id)
		}
	}
	keep := r.limit * 3 / 4
	if len(r.procs) <= keep {
		return
	}
	ids := make([]Identity, 0, len(r.procs))
	for id := range r.procs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b Identity) int { return cmp.Compare(r.procs[a].used, r.procs[b].used) })
	for _, id := range ids[:len(ids)-keep] {
		delete(r.procs, id)
	}
}

// userName names uid from the password database, or writes its number.
func (r *Resolver) userName(uid uint32) string {
	r.mu.Lock()
	name, ok := r.users[uid]
	r.mu.Unlock()
	if ok {
		return name
	}
	if name = UserName(uid); name == "" {
		name = strconv.FormatUint(uint64(uid), 10)
	}
	r.mu.Lock()
	if len(r.users) >= maxUsers {
		clear(r.users)
	}
	r.users[uid] = name
	r.mu.Unlock()
	return name
}

// CgroupByID names the cgroup an eBPF event's cgroup id refers to
// (bpf_get_current_cgroup_id, or a socket's cgroup). A cgroup created
// since the last look is found by walking the cgroup2 mount again, at most
// once a second; one removed since is not found.
func (r *Resolver) CgroupByID(id uint64) (Cgroup, bool) {
	path, ok := r.cgroups.path(id)
	if !ok {
		return Cgroup{}, false
	}
	c := ParseCgroupPath(path)
	c.ID = id
	return c, true
}

// readStat reads /proc/PID/stat; ErrExited where pid names no process, or
// one that has exited (a zombie).
func readStat(pid uint32) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/stat")
	if err != nil {
		return stat{}, procError(pid, err)
	}
	st, err := parseStat(b)
	if err != nil {
		return stat{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	if st.state == 'Z' || st.state == 'X' {
		return stat{}, fmt.Errorf("pid %d: %w", pid, ErrExited)
	}
	return st, nil
}

// procError says what a failed read of /proc/PID/... means: that the
// process is gone (the directory went, or the process is exiting), or
// the error as it is.
func procError(pid uint32, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("pid %d: %w", pid, ErrExited)
	}
	return fmt.Errorf("pid %d: %w", pid, err)
}

// readCmdline reads a command line, its arguments separated by NULs, as
// ps prints it: joined by spaces. Programs that rewrite their argv
// (setproctitle) pad it with NULs, which go.
func readCmdline(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxCmdline))
	b = bytes.TrimRight(b, "\x00")
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// ancestors walks up from ppid to an init: pid 1 or a container's first
// process. A parent that exits during the walk ends it.
func ancestors(ppid uint32) []Ancestor {
	var chain []Ancestor
	for pid := ppid; pid != 0 && len(chain) < maxAncestors; {
		st, err := readStat(pid)
		if err != nil {
			break
		}
		chain = append(chain, Ancestor{PID: pid, Name: st.comm})
		b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
		if err != nil {
			break
		}
		if s, err := parseStatus(b); err != nil || s.namespaceInit {
			break
		}
		pid = st.ppid
	}
	return chain
}

// wallClock turns a time since boot (CLOCK_BOOTTIME, /proc's clock) into
// wall-clock time, with a monotonic reading so that Age does not jump with
// the wall clock.
func wallClock(sinceBootNs uint64) time.Time {
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &now); err != nil {
		return time.Time{}
	}
	return time.Now().Add(-time.Duration(now.Nano() - int64(sinceBootNs)))
}
