// Package free decides what freeing a port means: which processes to stop
// so that the port's holders go, and what else an operator should know
// first (the service manager or container that would start them again).
// It decides from a snapshot taken now; carrying it out (signals through
// pidfds, SOCK_DESTROY) is the platform's.
package free

import (
	"slices"

	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Plan is what freeing a port would do.
type Plan struct {
	Port uint16
	// Targets are the topmost processes that hold the port: holders none
	// of whose ancestors hold it too (an nginx master, not its workers,
	// which it would only replace).
	Targets []*proc.Process
	// Holders are every process that holds the port, Targets included.
	Holders []*proc.Process
	// TimeWait counts the port's sockets no process holds that keep a
	// bind from succeeding (TIME_WAIT, orphans still closing).
	TimeWait int
}

// Make plans the freeing of r.Port from a snapshot of it.
func Make(r *snapshot.PortReport) Plan {
	p := Plan{Port: r.Port}
	holds := map[uint32]bool{}
	for _, s := range r.Sockets {
		if !r.Serves(&s) {
			continue
		}
		if !s.Held() {
			p.TimeWait++
			continue
		}
		for _, pid := range s.PIDs {
			holds[pid] = true
		}
	}
	for _, pid := range r.PIDs() {
		if !holds[pid] {
			continue
		}
		holder := r.Processes[pid]
		if holder == nil {
			continue
		}
		p.Holders = append(p.Holders, holder)
		if !slices.ContainsFunc(holder.Ancestors, func(a proc.Ancestor) bool { return holds[a.PID] }) {
			p.Targets = append(p.Targets, holder)
		}
	}
	return p
}
