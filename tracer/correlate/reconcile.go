package correlate

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Reconcile brings the socket table in step with a snapshot of every socket
// taken at timeNs, after the kernel lost events: sockets it lacks are
// adopted with their holders, owners it did not know are taken from it, and
// sockets that a process must hold but that no process holds in the
// snapshot (their close was among the lost events), unchanged since before
// it was taken, are forgotten. It prints nothing: what was lost is lost.
func (c *Correlator) Reconcile(r *snapshot.PortReport, timeNs int64) {
	listed := make(map[tracer.SockID]bool, len(r.Sockets))
	for i := range r.Sockets {
		ps := &r.Sockets[i]
		if ps.Sock == 0 || ps.Proto != tracer.ProtoTCP {
			continue
		}
		listed[ps.Sock] = true
		s := snapshotState(r, ps)
		j, known := c.byID[ps.Sock]
		switch {
		case !known:
			c.adopt(s)
		case c.socks[j].ownerVia == tracer.OwnerUnknown && s.ownerVia != tracer.OwnerUnknown:
			c.socks[j].owner, c.socks[j].ownerVia = s.owner, s.ownerVia
		}
	}
	var gone []int32
	for id, i := range c.byID {
		if s := &c.socks[i]; !listed[id] && s.sinceNs < timeNs && mustBeHeld(s) {
			gone = append(gone, i)
		}
	}
	for _, i := range gone {
		c.forget(i)
	}
	c.stats.Reconciled++
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
