package windows

import (
	"net/netip"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
)

const (
	// maxTCBs bounds how many Tcbs' endpoints are remembered. A Tcb that
	// ends in TIME_WAIT may never report its end, so entries can outlive
	// their Tcb.
	maxTCBs = 1 << 16
	// maxPending bounds the state changes waiting for their Tcb's
	// endpoints.
	maxPending = 4096
	// pendingHold is how long a state change waits for its Tcb's
	// endpoints: long enough for a connect that retransmits its SYN a few
	// times before TcpConnectTcbComplete names it.
	pendingHold = 10 * time.Second
)

// tcbEndpoints is what the joiner knows of one Tcb.
type tcbEndpoints struct {
	family       tracer.Family
	saddr, daddr netip.Addr
	sport, dport uint16
	// state is the Tcb's last known state: CLOSED before its first
	// change, StateUnknown when it is somewhere in its life.
	state tracer.State
}

// endpointsOf takes the endpoints that ev names, and the state it gives
// the Tcb, if any (see kindEndpoints).
func endpointsOf(ev *tracer.Event) tcbEndpoints {
	return tcbEndpoints{
		family: ev.Family,
		saddr:  ev.SAddr, daddr: ev.DAddr,
		sport: ev.SPort, dport: ev.DPort,
		state: ev.NewState,
	}
}

func (e *tcbEndpoints) sameEnds(o *tcbEndpoints) bool {
	return e.family == o.family && e.saddr == o.saddr && e.daddr == o.daddr &&
		e.sport == o.sport && e.dport == o.dport
}

func (e *tcbEndpoints) fill(ev *tracer.Event) {
	ev.Family = e.family
	ev.SAddr, ev.DAddr = e.saddr, e.daddr
	ev.SPort, ev.DPort = e.sport, e.dport
}

// tcbJoiner completes TcpTcbStateChange events, which name only a Tcb,
// with the endpoints that other TCPIP events reveal for the same Tcb, and
// applies the source-side filters, which need those endpoints.
//
// The handshake's state changes come before TcpConnectTcbComplete or
// TcpAcceptListenerComplete names the connection, so a change for a Tcb
// without known endpoints waits until they arrive or its hold ends. Changes
// of one Tcb keep their order; changes of different Tcbs may not.
type tcbJoiner struct {
	ports   tracer.Ports
	family  tracer.Family
	deliver func(*tracer.Event)

	tcbs map[tracer.SockID]tcbEndpoints
	// pending holds state changes of Tcbs without known endpoints, in
	// arrival order.
	pending []tracer.Event
	// unjoined counts state changes dropped because a filter needed
	// endpoints that never came.
	unjoined uint64
}

func newTCBJoiner(cfg *tracer.Config, deliver func(*tracer.Event)) *tcbJoiner {
	return &tcbJoiner{
		ports:   cfg.Ports,
		family:  cfg.Family,
		deliver: deliver,
		tcbs:    make(map[tracer.SockID]tcbEndpoints),
		pending: make([]tracer.Event, 0, maxPending),
	}
}

// push takes one decoded TCPIP event.
func (j *tcbJoiner) push(ev *tracer.Event) {
	if ev.Kind == tracer.KindState {
		j.pushState(ev)
		return
	}
	if ev.Sock != 0 {
		j.learn(ev)
	}
	if ev.Kind != kindEndpoints && j.wants(ev) {
		j.deliver(ev)
	}
}

func (j *tcbJoiner) pushState(ev *tracer.Event) {
	ep, known := j.tcbs[ev.Sock]
	if known && ev.OldState == tracer.StateClose && ep.state != tracer.StateClose {
		// A Tcb leaving CLOSED starts a new life. Unless what is known
		// was learned for that life, it belongs to a previous one at the
		// same address.
		delete(j.tcbs, ev.Sock)
		known = false
	}
	if !known {
		if ev.OldState == tracer.StateClose {
			// Whatever still waits for this Tcb is from a previous life.
			j.drainPending(ev.Sock, nil)
		}
		j.hold(ev)
		return
	}
	j.deliverState(ev, &ep)
}

// deliverState completes ev from ep and records the Tcb's new state.
func (j *tcbJoiner) deliverState(ev *tracer.Event, ep *tcbEndpoints) {
	ep.fill(ev)
	if ev.NewState == tracer.StateClose {
		delete(j.tcbs, ev.Sock)
	} else {
		ep.state = ev.NewState
		j.tcbs[ev.Sock] = *ep
	}
	if j.wants(ev) {
		j.deliver(ev)
	}
}

// learn records the endpoints ev names for its Tcb, then delivers the
// changes that were waiting for them.
func (j *tcbJoiner) learn(ev *tracer.Event) {
	ep := endpointsOf(ev)
	old, known := j.tcbs[ev.Sock]
	if known && ep.state == tracer.StateUnknown && old.sameEnds(&ep) {
		ep.state = old.state
	}
	if !known && len(j.tcbs) >= maxTCBs {
		j.forgetOneTCB()
	}
	j.tcbs[ev.Sock] = ep
	j.drainPending(ev.Sock, &ep)
}

// forgetOneTCB makes room in a full table. Which one goes does not matter
// much: a forgotten Tcb's next changes wait for its endpoints again.
func (j *tcbJoiner) forgetOneTCB() {
	for sock := range j.tcbs {
		delete(j.tcbs, sock)
		return
	}
}

// drainPending takes the pending changes of sock out of the queue, in
// order: completed with ep and delivered if ep is given, released if not.
func (j *tcbJoiner) drainPending(sock tracer.SockID, ep *tcbEndpoints) {
	kept := j.pending[:0]
	for i := range j.pending {
		p := &j.pending[i]
		switch {
		case p.Sock != sock:
			kept = append(kept, *p)
		case ep != nil:
			j.deliverState(p, ep)
		default:
			j.release(p)
		}
	}
	j.pending = kept
}

// hold queues a change whose Tcb has no known endpoints, making room by
// releasing the oldest change if the queue is full.
func (j *tcbJoiner) hold(ev *tracer.Event) {
	if len(j.pending) == cap(j.pending) {
		j.releaseOldest(1)
	}
	j.pending = append(j.pending, *ev)
}

// expire releases the changes held since before nowNs-pendingHold.
func (j *tcbJoiner) expire(nowNs int64) {
	deadline := nowNs - int64(pendingHold)
	n := 0
	for n < len(j.pending) && j.pending[n].TimeNs < deadline {
		n++
	}
	j.releaseOldest(n)
}

// deliveredUpTo is the time up to which every event has been delivered,
// when ETW has delivered every event up to upTo: the oldest state change
// held for its Tcb's endpoints is not yet, but a tick waits for it only as
// long as the correlator waits for a line (a connect whose SYNs go
// unanswered waits for its endpoints for seconds, and would hold every
// line back with it).
func (j *tcbJoiner) deliveredUpTo(upTo int64) int64 {
	delivered, floor := upTo, upTo-correlate.HoldNs
	for i := range j.pending {
		delivered = min(delivered, max(j.pending[i].TimeNs, floor))
	}
	return delivered
}

func (j *tcbJoiner) releaseOldest(n int) {
	for i := range n {
		j.release(&j.pending[i])
	}
	j.pending = j.pending[:copy(j.pending, j.pending[n:])]
}

// release gives up waiting for the endpoints of a held change. Without a
// filter it is still a fact worth delivering; with one, there is no telling
// whether it matches.
func (j *tcbJoiner) release(ev *tracer.Event) {
	if len(j.ports) == 0 && j.family == 0 {
		j.deliver(ev)
		return
	}
	j.unjoined++
}

// wants applies the source-side filters.
func (j *tcbJoiner) wants(ev *tracer.Event) bool {
	if j.family != 0 && ev.Family != j.family {
		return false
	}
	return j.ports.Contains(ev.SPort) || j.ports.Contains(ev.DPort)
}
