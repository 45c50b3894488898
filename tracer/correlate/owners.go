package correlate

import "github.com/porttrace/porttrace/tracer"

// A socket's owner is whoever holds it now. The correlator learns owners
// from the calls they make (connect, listen, accept, close); but a socket
// also changes hands without a call porttrace sees: a daemon forks after
// listen() and the process that listened exits, a socket is passed over
// SCM_RIGHTS, a child inherits it. So each owner's sockets are on a list,
// and when the owner exits, those it left open (closing them is the
// first thing the kernel does after the exit) are looked up in the open
// files of every process, off the event loop (HolderFinder), and given to
// the oldest process holding them. A process that closes a socket another
// owns holds it too: it takes it over there and then.

// ownerKey identifies a process across pid reuse.
type ownerKey struct {
	pid     uint32
	startNs uint64
}

func keyOf(p *tracer.Process) ownerKey { return ownerKey{p.PID, p.StartNs} }

// assignOwner makes p socket i's owner; exited says p has exited already
// (an owner passed on from a socket that outlived it). Every change of
// owner goes through here, so that the owners' lists stay true.
func (c *Correlator) assignOwner(i int32, p tracer.Process, via tracer.OwnerVia, exited bool) {
	c.unlink(i)
	s := c.socks.at(i)
	s.owner, s.ownerVia, s.ownerExited = p, via, exited
	if !exited {
		c.link(i)
	}
}

// link puts socket i on its owner's list.
func (c *Correlator) link(i int32) {
	s := c.socks.at(i)
	if s.owner.PID == 0 {
		return
	}
	slot := c.ownerSlot(keyOf(&s.owner))
	head := c.ownerHeads[slot]
	s.ownerSlot, s.ownerPrev, s.ownerNext = slot+1, 0, head
	if head != 0 {
		c.socks.at(head - 1).ownerPrev = i + 1
	}
	c.ownerHeads[slot] = i + 1
}

// ownerSlot is the slot of key's list, a new empty one if it has none.
func (c *Correlator) ownerSlot(key ownerKey) int32 {
	if c.lastSlot >= 0 && c.lastOwner == key {
		return c.lastSlot
	}
	slot, ok := c.byOwner[key]
	if !ok {
		if n := len(c.freeSlots); n > 0 {
			slot, c.freeSlots = c.freeSlots[n-1], c.freeSlots[:n-1]
		} else {
			slot = int32(len(c.ownerHeads))
			c.ownerHeads = append(c.ownerHeads, 0)
		}
		c.byOwner[key] = slot
	}
	c.lastOwner, c.lastSlot = key, slot
	return slot
}

// dropOwner frees key's list, which is empty or about to be forgotten: a
// free slot heads no list.
func (c *Correlator) dropOwner(key ownerKey, slot int32) {
	delete(c.byOwner, key)
	c.ownerHeads[slot] = 0
	c.freeSlots = append(c.freeSlots, slot)
	if c.lastSlot == slot {
		c.lastSlot = -1
	}
}

// unlink takes socket i off its owner's list, and drops a list it empties.
func (c *Correlator) unlink(i int32) {
	s := c.socks.at(i)
	if s.ownerSlot == 0 {
		return
	}
	slot := s.ownerSlot - 1
	if s.ownerPrev != 0 {
		c.socks.at(s.ownerPrev - 1).ownerNext = s.ownerNext
	} else {
		c.ownerHeads[slot] = s.ownerNext
	}
	if s.ownerNext != 0 {
		c.socks.at(s.ownerNext - 1).ownerPrev = s.ownerPrev
	}
	if c.ownerHeads[slot] == 0 {
		c.dropOwner(keyOf(&s.owner), slot)
	}
	s.ownerSlot, s.ownerPrev, s.ownerNext = 0, 0, 0
}

// onExit marks the sockets of a process that exited, and gives those a
// process could still hold a deadline to close by before porttrace looks
// for who holds them.
func (c *Correlator) onExit(ev *tracer.Event) {
	c.stats.Exits++
	key := keyOf(&ev.Process)
	slot, ok := c.byOwner[key]
	if !ok {
		return
	}
	c.ownerExits++
	next := c.ownerHeads[slot]
	c.dropOwner(key, slot)
	for next != 0 {
		i := next - 1
		s := c.socks.at(i)
		next = s.ownerNext
		s.ownerSlot, s.ownerPrev, s.ownerNext = 0, 0, 0
		s.ownerExited = true
		if c.findsHolders && s.holdable() {
			s.exitNs = ev.TimeNs
			c.schedule(i)
		}
	}
}

// holdable says whether a process may hold the socket still: a full socket
// that no close has reached. One its owner's exit left so is held by
// another process, or waits for one in a listener's accept queue.
func (s *sockState) holdable() bool {
	if s.timewait || s.handedOver {
		return false
	}
	switch s.state {
	case tracer.StateListen, tracer.StateSynSent, tracer.StateSynRecv, tracer.StateEstablished, tracer.StateCloseWait:
		return true
	}
	return false
}

// fileSock is the socket open files refer to: an MPTCP subflow's MPTCP
// socket, or the socket itself.
func (s *sockState) fileSock() tracer.SockID {
	if s.parent != 0 {
		return s.parent
	}
	return s.id
}

// askHolders queues the lookup of who holds socket i, if its owner's exit
// left it open.
func (c *Correlator) askHolders(i int32) {
	s := c.socks.at(i)
	if !s.ownerExited || !s.holdable() || s.asking {
		return
	}
	s.asking = true
	c.queries = append(c.queries, tracer.HolderQuery{Sock: s.fileSock(), Port: s.sport})
	c.waiting = append(c.waiting, s.id)
}

// takeHolderQueries hands the queued lookups to the loop, which makes them
// one batch at a time: nil while a batch is under way or none is queued.
func (c *Correlator) takeHolderQueries() []tracer.HolderQuery {
	if len(c.queries) == 0 || len(c.asked) > 0 {
		return nil
	}
	q := append([]tracer.HolderQuery(nil), c.queries...)
	c.queries = c.queries[:0]
	c.asked, c.waiting = c.waiting, c.asked[:0]
	return q
}

// applyHolders takes the answer to the batch under way: each socket still
// left open by its exited owner goes to the oldest process holding it. A
// socket that closed or changed hands meanwhile keeps what it has.
func (c *Correlator) applyHolders(holders []tracer.Holder, err error, nowNs int64) {
	if err != nil {
		c.stats.HolderErrors++
	}
	for _, id := range c.asked {
		i, ok := c.byID[id]
		if !ok || !c.socks.at(i).asking {
			continue
		}
		s := c.socks.at(i)
		s.asking = false
		if err != nil || !s.ownerExited || !s.holdable() {
			continue
		}
		var next *tracer.Process
		for k := range holders {
			if h := &holders[k]; h.Sock == s.fileSock() && (next == nil || h.Older(next)) {
				next = &h.Process
			}
		}
		if next != nil {
			c.handOver(i, *next, tracer.OwnerHolder, nowNs)
		}
	}
	c.asked = c.asked[:0]
}

// handOver gives socket i to p, with a line that says so.
func (c *Correlator) handOver(i int32, p tracer.Process, via tracer.OwnerVia, timeNs int64) {
	s := c.socks.at(i)
	prev, prevExited := s.owner, s.ownerExited
	c.assignOwner(i, p, via, false)
	c.stats.Handovers++
	r := c.record(s, heldLine{timeNs: timeNs, durationNs: -1, new: s.state, typ: tracer.RecordOwner})
	r.Prev, r.PrevExited = prev, prevExited
	c.output(r)
}
