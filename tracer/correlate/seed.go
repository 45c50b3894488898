package correlate

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Seed tells the correlator about the sockets that existed before the
// trace, with the processes holding them, and emits a RecordSocket line,
// dated timeNs, for each, so that a watch starts from what is there and
// later events of those sockets are attributed to their owners. Sockets
// without a kernel identity (timewait ones) or without a holder are only
// reported.
//
// timeNs is when the snapshot r was complete. The tracer was started
// before it, so the events up to then are still to come: the correlator
// takes the snapshot only once it has handled them (at its first event
// after timeNs, or a tick past it). A socket those events told of already,
// such as a connection opened while the snapshot was taken, or a socket
// freed and its memory reused meanwhile, keeps what they said (the
// snapshot only names an owner or role they did not) and gets no line of
// its own: its lines tell it. Until then the lines are held, for the owner
// and role the snapshot may name.
func (c *Correlator) Seed(r *snapshot.PortReport, timeNs int64) {
	c.waitSeed(waitingSeed{report: r, timeNs: timeNs, lines: true})
}

// Adopt is Seed without its lines: a watch of every port knows the owners
// of the sockets older than it, whose later lines it prints, without a
// line for each socket of the machine at its start.
func (c *Correlator) Adopt(r *snapshot.PortReport, timeNs int64) {
	c.waitSeed(waitingSeed{report: r, timeNs: timeNs})
}

// goneSockets are the sockets that ended while snapshots waited: by id,
// and by ends, where the last one to end there says whether it may have
// left a timewait socket unseen (a close from FIN_WAIT2 or CLOSING not
// handed to one the events showed).
type goneSockets struct {
	ids map[tracer.SockID]bool
	// ends says, by ends, whether the last socket to end there may have
	// left a timewait socket.
	ends map[tupleKey]bool
}

// dumpedBefore says a socket without an id that a snapshot found in state
// at ends was dumped before the events told its end: the last socket
// there ended, and not into a timewait socket, which the snapshot may show
// where the events did not (in the first moments of a trace, before the
// timewait probes are attached).
func (g *goneSockets) dumpedBefore(ends tupleKey, state tracer.State) bool {
	leftTimeWait, ok := g.ends[ends]
	return ok && !(state == tracer.StateTimeWait && leftTimeWait)
}

// waitingSeed is a snapshot that waits for the events older than it.
type waitingSeed struct {
	report *snapshot.PortReport
	timeNs int64
	lines  bool
}

func (c *Correlator) waitSeed(sd waitingSeed) {
	c.seeds = append(c.seeds, sd)
	c.seedsAtNs = max(c.seedsAtNs, sd.timeNs)
	if c.seedListeners == nil {
		c.seedListeners = make(map[portKey][]netip.Addr)
		c.gone = &goneSockets{ids: make(map[tracer.SockID]bool), ends: make(map[tupleKey]bool)}
	}
	for i := range sd.report.Sockets {
		if ps := &sd.report.Sockets[i]; ps.State == tracer.StateListen && ps.Proto != tracer.ProtoUDP {
			key := portKey{ps.NetNS, ps.Local.Port()}
			c.seedListeners[key] = append(c.seedListeners[key], ps.Local.Addr())
		}
	}
}

// waitingSeeds says snapshots wait for the events older than them.
func (c *Correlator) waitingSeeds() bool { return len(c.seeds) > 0 }

// seedsDue takes the waiting snapshots once the events have reached the
// time they were taken.
func (c *Correlator) seedsDue(timeNs int64) {
	if len(c.seeds) > 0 && timeNs > c.seedsAtNs {
		c.takeSeeds()
	}
}

// takeSeeds adopts what the waiting snapshots found, in the order they
// were given, and prints the lines held while they waited.
func (c *Correlator) takeSeeds() {
	seeds, gone := c.seeds, c.gone
	c.seeds, c.seedListeners, c.gone = nil, nil, nil
	// What the events told of, before any snapshot adds its sockets:
	// once, at the start, so a map is cheap.
	known := make(map[tracer.SockID]bool, len(c.byID))
	knownEnds := make(map[tupleKey]bool, len(c.byID))
	for id, i := range c.byID {
		known[id] = true
		knownEnds[c.socks.at(i).tuple()] = true
	}
	c.reserveTimeWaits(seeds)
	for _, sd := range seeds {
		for i := range sd.report.Sockets {
			ps := &sd.report.Sockets[i]
			s := snapshotState(sd.report, ps)
			traced, ok := tracedState(s, ps)
			switch {
			case ok && known[traced.id]:
				c.learnFromSnapshot(c.byID[traced.id], &traced)
				continue
			case ok && gone.ids[traced.id]:
				continue
			case ok:
				if _, adopted := c.byID[traced.id]; !adopted {
					c.adopt(traced)
				}
			case ps.Proto == tracer.ProtoUDP:
			case knownEnds[s.tuple()]:
				// A socket without an id (a timewait one; one its
				// holder closed before the walk of the files) at the
				// ends of one the events follow: that one, or gone for
				// it (a new connection's SYN kills a timewait socket at
				// its ends).
				continue
			case gone.dumpedBefore(s.tuple(), ps.State):
				continue
			}
			if sd.lines {
				c.seedLine(&s, ps, sd.timeNs)
			}
			if !ok && ps.Proto == tracer.ProtoTCP && ps.Timer == snapshot.TimerTimeWait {
				c.adoptTimeWait(s, sd.timeNs+ps.TimerNs)
			}
		}
	}
	for _, i := range c.byID {
		s := c.socks.at(i)
		if s.role == tracer.RoleUnknown && !s.timewait {
			// First seen mid-life before the listeners were known.
			s.role = c.roleByListeners(s)
		}
		if s.nheld > 0 && s.complete() {
			c.release(i)
		}
	}
}

// seedLine emits the line of a socket found at the start.
func (c *Correlator) seedLine(s *sockState, ps *snapshot.PortSocket, timeNs int64) {
	rec := c.record(s, heldLine{timeNs: timeNs, durationNs: -1, new: ps.State, typ: tracer.RecordSocket})
	if ps.Timer == snapshot.TimerTimeWait {
		// The time left to a timewait socket; another timer's
		// (keepalive, retransmit) says nothing of the socket's end.
		rec.TimeoutNs = ps.TimerNs
	}
	c.output(rec)
}

// learnFromSnapshot takes what a snapshot says of socket i, whose events
// came first, where they did not say it: its holder and its role.
func (c *Correlator) learnFromSnapshot(i int32, t *sockState) {
	s := c.socks.at(i)
	if s.ownerVia == tracer.OwnerUnknown && t.ownerVia != tracer.OwnerUnknown {
		c.assignOwner(i, t.owner, t.ownerVia, false)
	}
	if s.role == tracer.RoleUnknown {
		s.role = t.role
	}
	if s.inode == 0 {
		s.inode = t.inode
	}
}

// snapshotState is what a snapshot says of one socket: its ends, state and
// owner. Of several holders (a daemon's master and its workers), the owner
// is the oldest, as when an owner's exit leaves a socket to them.
func snapshotState(r *snapshot.PortReport, ps *snapshot.PortSocket) sockState {
	var s sockState
	s.id, s.proto, s.family, s.state, s.netns, s.inode, s.role = ps.Sock, ps.Proto, ps.Family, ps.State, ps.NetNS, ps.Inode, ps.Role
	s.saddr, s.sport = ps.Local.Addr(), ps.Local.Port()
	s.daddr, s.dport = ps.Remote.Addr(), ps.Remote.Port()
	for _, pid := range ps.PIDs {
		p := r.Processes[pid]
		if p == nil {
			continue
		}
		holder := tracer.Process{PID: p.PID, StartNs: p.StartNs, Comm: tracer.CommFrom(p.Name), CgroupID: p.Cgroup.ID}
		if start, ok := r.StartNs[pid]; ok {
			holder.StartNs = start
		}
		if s.ownerVia == tracer.OwnerUnknown || holder.Older(&s.owner) {
			s.owner, s.ownerVia = holder, tracer.OwnerSnapshot
		}
	}
	return s
}

// tracedState is the socket whose events the tracer sees for a socket a
// snapshot found, and whether there is one: a TCP socket itself; for an
// MPTCP socket (every Go 1.24+ listener and connection) its first TCP
// subflow, which stands for it as the subflows traced live do.
func tracedState(s sockState, ps *snapshot.PortSocket) (sockState, bool) {
	switch {
	case ps.Proto == tracer.ProtoTCP && ps.Sock != 0:
		return s, true
	case ps.Proto == tracer.ProtoMPTCP && ps.Subflow != 0:
		s.id, s.proto, s.parent = ps.Subflow, tracer.ProtoTCP, ps.Sock
		return s, true
	}
	return s, false
}

// adopt starts tracking a socket a snapshot found. A connection's subflow
// stands for its MPTCP connection, whose later subflows take its owner.
func (c *Correlator) adopt(s sockState) {
	ev := tracer.Event{Sock: s.id, Proto: s.proto}
	i, _ := c.lookup(&ev)
	*c.socks.at(i) = s
	c.link(i)
	c.enterState(i)
	if _, ok := c.mptcp[s.parent]; s.parent != 0 && s.state != tracer.StateListen && !ok {
		c.mptcp[s.parent] = i
	}
}

// reserveTimeWaits makes the maps that the snapshots' timewait sockets
// are adopted into (adoptTimeWait), sized for all of them at once: beside a busy
// port they are thousands (14,000 in make bench's storm), and maps grown
// one doubling at a time for them took a third of a watch's start.
func (c *Correlator) reserveTimeWaits(seeds []waitingSeed) {
	n := 0
	for _, sd := range seeds {
		for i := range sd.report.Sockets {
			if sd.report.Sockets[i].Timer == snapshot.TimerTimeWait {
				n++
			}
		}
	}
	if n == 0 {
		return
	}
	if c.startTimeWaits == nil {
		c.startTimeWaits = make(map[tupleKey]tracer.SockID, n)
	}
	byID := make(map[tracer.SockID]int32, len(c.byID)+n)
	maps.Copy(byID, c.byID)
	c.byID = byID
}

// adoptTimeWait follows a timewait socket a snapshot found, so that the
// index counts it (top, the metrics) and its end is told. Its first timer
// event (its expiry, or its kill) names it by the kernel's address, which
// the snapshot did not have: until then it goes by an id below any
// address, and by its ends, which no other timewait socket has.
// expiresNs is when its timer expires, which dates its TIME_WAIT in the
// index (ageSince); its lines, as any socket's older than the trace, give
// no duration for the state it was found in.
func (c *Correlator) adoptTimeWait(s sockState, expiresNs int64) {
	if _, adopted := c.startTimeWaits[s.tuple()]; adopted {
		return // in two snapshots (a watch with --connections gives two)
	}
	c.startTimeWaitIDs++
	s.id, s.timewait, s.sinceNs = tracer.SockID(c.startTimeWaitIDs), true, 0
	s.endState, s.endExpiresNs = s.state, expiresNs
	c.startTimeWaits[s.tuple()] = s.id
	c.adopt(s)
}

// claimStartTimeWait gives a timewait socket found by a snapshot the
// kernel's address a timer event names it by, the first time one does.
func (c *Correlator) claimStartTimeWait(ev *tracer.Event) {
	if len(c.startTimeWaits) == 0 {
		return
	}
	key := eventTuple(ev)
	id, ok := c.startTimeWaits[key]
	if !ok {
		return
	}
	delete(c.startTimeWaits, key)
	i, adopted := c.byID[id]
	if !adopted {
		return
	}
	if j, known := c.byID[ev.Sock]; known {
		if t := c.socks.at(j); t.timewait && t.tuple() == key {
			// The events follow the timewait socket at these ends
			// already: the snapshot's is that one, told twice.
			c.forget(i)
			return
		}
		c.endReused(j, ev.TimeNs) // its memory is this timewait socket's now
	}
	delete(c.byID, id)
	c.socks.at(i).id = ev.Sock
	c.byID[ev.Sock] = i
}

// seedListening says a waiting snapshot has a listener that takes
// connections to addr and port in namespace netns (as listenerAt).
func (c *Correlator) seedListening(netns uint32, port uint16, addr netip.Addr) bool {
	if c.seedListeners == nil {
		return false
	}
	return slices.ContainsFunc(c.seedListeners[portKey{netns, port}], func(l netip.Addr) bool {
		return l == addr || l.IsUnspecified()
	})
}
