package windows

import (
	"cmp"
	"slices"

	"github.com/porttrace/porttrace/tracer/proc"
)

// procEntry is one process of a Toolhelp snapshot (PROCESSENTRY32), with
// its creation time where the process could be opened.
type procEntry struct {
	pid, ppid uint32
	// name is the image's file name ("svchost.exe"), which the snapshot
	// has even for processes that cannot be opened.
	name string
	// startNs is the creation time in nanoseconds since the Unix epoch, 0
	// where the process could not be opened (the System process,
	// protected processes, another user's without elevation).
	startNs uint64
}

// procTable is every process at one moment, by pid.
type procTable map[uint32]procEntry

// parent returns e's parent while it is the process that created e.
// Windows keeps a process's parent pid after the parent exits and may give
// that pid to a newer process, which started after e: that one is no
// parent. Pid 0 (the Idle process) parents nothing.
func (t procTable) parent(e procEntry) (procEntry, bool) {
	if e.ppid == 0 || e.ppid == e.pid {
		return procEntry{}, false
	}
	p, ok := t[e.ppid]
	if !ok || p.startNs != 0 && e.startNs != 0 && p.startNs > e.startNs {
		return procEntry{}, false
	}
	return p, true
}

// ancestors lists pid's parent, its parent and so on, as far as they still
// run.
func (t procTable) ancestors(pid uint32) []proc.Ancestor {
	var out []proc.Ancestor
	seen := map[uint32]bool{pid: true}
	e, ok := t[pid]
	for ok {
		if e, ok = t.parent(e); !ok || seen[e.pid] {
			break
		}
		seen[e.pid] = true
		out = append(out, proc.Ancestor{PID: e.pid, Name: e.name})
	}
	return out
}

// descendants lists the processes below root, each before its children
// (the order in which to stop a tree). A child whose creation time is
// unknown cannot be told from a newer process that took a dead child's
// pid: it is left out, with what is below it, and listed in unknown.
func (t procTable) descendants(root proc.Identity) (ids []proc.Identity, unknown []uint32) {
	children := map[uint32][]procEntry{}
	for _, e := range t {
		children[e.ppid] = append(children[e.ppid], e)
	}
	for _, kids := range children {
		slices.SortFunc(kids, func(a, b procEntry) int { return cmp.Compare(a.pid, b.pid) })
	}
	seen := map[uint32]bool{root.PID: true}
	var visit func(pid uint32, startNs uint64)
	visit = func(pid uint32, startNs uint64) {
		for _, c := range children[pid] {
			switch {
			case seen[c.pid]:
			case c.startNs == 0:
				unknown = append(unknown, c.pid)
			case c.startNs >= startNs:
				seen[c.pid] = true
				ids = append(ids, proc.Identity{PID: c.pid, StartNs: c.startNs})
				visit(c.pid, c.startNs)
			}
		}
	}
	visit(root.PID, root.StartNs)
	return ids, unknown
}
