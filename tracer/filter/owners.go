package filter

import (
	"strings"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
)

const (
	// maxKnown bounds the processes and cgroups a test remembers; past it
	// the test forgets them all and asks again (a machine forking
	// hundreds of thousands of socket owners in one watch).
	maxKnown = 1 << 16
	// maxDepth ends a walk up the parents that never reaches the root nor
	// an init.
	maxDepth = 64
	// retryCgroupNs is how long a cgroup the system could not name stays
	// unnamed before it is asked about again: a cgroup created a moment
	// ago is named on the next walk of the cgroup tree, which the
	// resolver makes at most once a second. After giveUpCgroupNs from its
	// first line it is taken for one removed before it could be named
	// (render.Labels gives up as late).
	retryCgroupNs  = int64(1e9)
	giveUpCgroupNs = int64(3e9)
)

// Tree tells whether a socket's owner is a process or one of its
// descendants: its children, theirs, and so on, as they fork while the
// watch runs.
//
// The first time Tree meets a process it walks up its parents and
// remembers the answer: once per process, never per event. The first step
// takes the parent the event names (Linux's events carry the parent's
// pid, read in the kernel when the process acted, so that a child gone a
// moment later is still placed); the rest read the system's process table
// (/proc/PID/stat on Linux), one read per ancestor, none past an ancestor
// it has met before. A process whose parent exited before it acted was
// handed to a reaper (init) and is no longer below the root.
type Tree struct {
	root     proc.Identity
	identify func(pid uint32) (proc.Identity, error)
	parent   func(proc.Identity) (proc.Identity, error)
	known    map[proc.Identity]bool
}

// NewTree returns the Tree of root, naming processes with identify and
// walking up with parent (proc.Identify and proc.Parent on Linux).
func NewTree(root proc.Identity, identify func(pid uint32) (proc.Identity, error), parent func(proc.Identity) (proc.Identity, error)) *Tree {
	return &Tree{root: root.Key(), identify: identify, parent: parent, known: map[proc.Identity]bool{}}
}

// Contains reports whether p is the root or one of its descendants.
func (t *Tree) Contains(p *tracer.Process) bool {
	if p.PID == 0 {
		return false
	}
	id := proc.Identity{PID: p.PID, StartNs: p.StartNs}.Key()
	if in, ok := t.known[id]; ok {
		return in
	}
	if len(t.known) >= maxKnown {
		clear(t.known)
	}
	in := t.isRoot(id)
	if !in {
		parent, err := t.parentOf(id, p.PPID)
		in = err == nil && t.below(parent)
	}
	t.known[id] = in
	return in
}

// parentOf is id's parent: the one the event named, ppid, where it did.
func (t *Tree) parentOf(id proc.Identity, ppid uint32) (proc.Identity, error) {
	switch {
	case ppid == 0:
		return t.parent(id)
	case ppid == t.root.PID:
		return t.root, nil
	}
	parent, err := t.identify(ppid)
	if err == nil && id.StartNs != 0 && parent.Key().StartNs > id.StartNs {
		// Younger than its child: a newcomer that took a dead parent's pid.
		return proc.Identity{}, proc.ErrExited
	}
	return parent.Key(), err
}

// below reports whether id is the root or below it, walking up its
// parents and remembering the answer for each.
func (t *Tree) below(id proc.Identity) bool {
	var path []proc.Identity
	in := false
	for range maxDepth {
		if t.isRoot(id) {
			in = true
			break
		}
		if known, ok := t.known[id]; ok {
			in = known
			break
		}
		path = append(path, id)
		parent, err := t.parent(id)
		if err != nil || parent.PID == id.PID {
			break // exited, or at the top: not below the root
		}
		id = parent.Key()
	}
	for _, q := range path {
		t.known[q] = in
	}
	return in
}

// isRoot: a platform that does not say when its processes started
// (Windows' events) leaves the root to be known by its pid alone.
func (t *Tree) isRoot(id proc.Identity) bool {
	return id == t.root || (id.StartNs == 0 && id.PID == t.root.PID)
}

// Container tells whether a socket's owner runs in a container, from the
// cgroup id its lines carry. The first time it meets a cgroup id it asks
// the system for the cgroup's path (proc.Resolver.CgroupByID, a lookup in
// the resolver's index of the cgroup tree, which walks the tree again at
// most once a second for an id it does not know) and remembers whether
// the path is the container's: once per cgroup, never per event.
type Container struct {
	id     string
	lookup func(cgroupID uint64) (proc.Cgroup, bool)
	known  map[uint64]cgroupVerdict
}

type cgroupVerdict struct {
	in bool
	// firstNs is when the cgroup was first met, and retryNs when to ask
	// again about it if the system could not name it (0: never again).
	firstNs, retryNs int64
}

// NewContainer returns the test of the container whose id is id or starts
// with it (docker ps shows the first 12 digits), naming cgroups with
// lookup.
func NewContainer(id string, lookup func(cgroupID uint64) (proc.Cgroup, bool)) *Container {
	return &Container{id: strings.ToLower(id), lookup: lookup, known: map[uint64]cgroupVerdict{}}
}

// Contains reports whether cgroup cgroupID is the container's (nowNs on
// the events' clock).
func (c *Container) Contains(cgroupID uint64, nowNs int64) bool {
	if cgroupID == 0 {
		return false
	}
	v, ok := c.known[cgroupID]
	if ok && (v.retryNs == 0 || nowNs < v.retryNs) {
		return v.in
	}
	if !ok {
		if len(c.known) >= maxKnown {
			clear(c.known)
		}
		v.firstNs = nowNs
	}
	cg, named := c.lookup(cgroupID)
	v.in = named && cg.Container != nil && strings.HasPrefix(cg.Container.ID, c.id)
	v.retryNs = 0
	if !named && nowNs-v.firstNs < giveUpCgroupNs {
		v.retryNs = nowNs + retryCgroupNs
	}
	c.known[cgroupID] = v
	return v.in
}
