package correlate

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Reconcile brings the socket table in step with a snapshot of every socket
// taken at timeNs, after the kernel lost events. Sockets it lacks are
// adopted with their holders, and owners it did not know taken from it.
// A socket whose address the snapshot shows with other ends, or held by
// others than its owner, was freed and its address reused unseen: the
// snapshot's socket replaces it. Sockets that are gone, unchanged since
// before the snapshot, are forgotten: those a process must hold when no
// process holds them (their close was among the lost events), and the
// others (closing, TIME_WAIT) when no socket has their ends (their end
// was). It prints nothing: what was lost is lost.
func (c *Correlator) Reconcile(r *snapshot.PortReport, timeNs int64) {
	listed := make(map[tracer.SockID]bool, len(r.Sockets))
	ends := make(map[tupleKey]bool, len(r.Sockets))
	// heldAt lists the held sockets by their ends: an MPTCP socket's,
	// which the snapshot lists, are those of the TCP subflows the events
	// follow, under other ids, and held by the same process.
	heldAt := make(map[tupleKey][]*snapshot.PortSocket, len(r.Sockets))
	for i := range r.Sockets {
		ps := &r.Sockets[i]
		if ps.Proto == tracer.ProtoUDP {
			continue
		}
		key := makeTuple(ps.NetNS, ps.Local.Addr(), ps.Local.Port(), ps.Remote.Addr(), ps.Remote.Port())
		ends[key] = true
		if ps.Held() {
			heldAt[key] = append(heldAt[key], ps)
		}
		if ps.Sock == 0 || ps.Proto != tracer.ProtoTCP {
			continue
		}
		listed[ps.Sock] = true
		s := snapshotState(r, ps)
		j, known := c.byID[ps.Sock]
		switch {
		case !known:
			c.adopt(s)
		case c.socks.at(j).sinceNs >= timeNs:
			// Changed since the snapshot: the events know better.
		case c.socks.at(j).tuple() != s.tuple() || !heldBy(r, ps, &c.socks.at(j).owner):
			c.release(j)
			c.forget(j)
			c.adopt(s)
		}
	}
	var gone []int32
	for id, i := range c.byID {
		s := c.socks.at(i)
		if s.sinceNs >= timeNs {
			continue
		}
		if mustBeHeld(s) && !listed[id] && !heldByOwner(r, heldAt[s.tuple()], &s.owner) || !mustBeHeld(s) && !ends[s.tuple()] {
			gone = append(gone, i)
		}
	}
	for _, i := range gone {
		c.forget(i)
	}
	c.stats.Reconciled++
}

// heldByOwner says whether owner holds one of socks: a socket the snapshot
// does not list by its id, at the ends of one its owner holds, is that
// one's subflow; at the ends of one another process holds (a listener
// closed unseen, another opened on its address), it is gone.
func heldByOwner(r *snapshot.PortReport, socks []*snapshot.PortSocket, owner *tracer.Process) bool {
	for _, ps := range socks {
		if heldBy(r, ps, owner) {
			return true
		}
	}
	return false
}

// heldBy says whether owner is among the holders a snapshot names of ps.
// The snapshot knows a process's start to the clock tick (/proc), the
// events to the nanosecond: they are compared at the tick.
func heldBy(r *snapshot.PortReport, ps *snapshot.PortSocket, owner *tracer.Process) bool {
	id := proc.Identity{PID: owner.PID, StartNs: owner.StartNs}
	for _, pid := range ps.PIDs {
		if p := r.Processes[pid]; p != nil && p.Same(id) {
			return true
		}
	}
	return false
}

// mustBeHeld says whether a process holds a socket in s's state: a
// listener, a connect under way, an open connection a process accepted or
// made, one the peer closed. (Connections waiting to be accepted and
// closing ones may be held by no process.)
func mustBeHeld(s *sockState) bool {
	switch s.state {
	case tracer.StateListen, tracer.StateSynSent, tracer.StateCloseWait:
		return !s.timewait
	case tracer.StateEstablished:
		return !s.timewait && !(s.passive && s.ownerVia == tracer.OwnerUnknown)
	}
	return false
}
