package history

import (
	"github.com/porttrace/porttrace/tracer"
)

// changeKind says what a change tells the writer.
type changeKind uint8

const (
	// changeBound: a process bound a socket to a port.
	changeBound changeKind = iota + 1
	// changeListening: a process listened on a socket.
	changeListening
	// changeListenClosed: a listener closed.
	changeListenClosed
	// changeConnEnded: a connection ended on a port a bound socket was
	// seen on; it may be that socket's end.
	changeConnEnded
	// changeSeen: porttrace's start-up snapshot found a process holding a
	// socket (listening says whether it listened).
	changeSeen
	// changeSeenAll: the snapshot is over; open holders of earlier runs it
	// did not find again are gone.
	changeSeenAll
	// changeBindFailed: a bind(2) failed with errno.
	changeBindFailed
	// changeCounts: a port's connection counts for one minute.
	changeCounts
	// changeSync asks the writer to commit and answer on done.
	changeSync
	// changeOwner: the socket a holder holds passed to another process
	// (prevPID's exit, a descriptor passed or inherited).
	changeOwner
)

// change is what the sink hands the writer: a fixed-size value, so that
// queueing one allocates nothing.
type change struct {
	kind      changeKind
	listening bool
	errno     int32
	timeNs    int64
	socket    Socket
	pid       uint32
	prevPID   uint32
	comm      tracer.Comm
	via       tracer.OwnerVia
	// minute and counts are a changeCounts's.
	minute int64
	counts Connections
	done   chan error
}

// countsFlushNs is how long connection counts gather in the sink before
// they go to the writer: with the writer's commitInterval, what a kill -9
// loses stays under a second.
const countsFlushNs = int64(250e6)

const (
	inbound = iota
	outbound
)

// sinkState is the event loop's side of a Store: what it needs to turn
// records into changes, touched only by Record, Tick and Close.
type sinkState struct {
	// listeners counts the listeners seen per port, to tell an inbound
	// connection (counted under the local port) from an outbound one
	// (counted under the remote port).
	listeners *[1 << 16]uint16
	// boundPorts marks ports a bound, not yet listening, socket was seen
	// on: only there may a connection's end be a bound socket's.
	boundPorts *[1 << 16 / 64]uint64
	// counts gathers connection counts of the current minute, per
	// direction and port; touched lists the entries that are not zero.
	counts    *[2][1 << 16]ConnCounts
	touched   []uint32
	minute    int64
	flushedNs int64
	seenAll   bool
	// snapshotAtNs is when the start-up snapshot's lines are dated (see
	// AwaitSnapshot).
	snapshotAtNs int64
}

func (st *sinkState) init() {
	st.listeners = new([1 << 16]uint16)
	st.boundPorts = new([1 << 16 / 64]uint64)
	st.counts = new([2][1 << 16]ConnCounts)
	st.touched = make([]uint32, 0, 2<<16)
}

func (st *sinkState) markBound(port uint16) { st.boundPorts[port/64] |= 1 << (port % 64) }

// takeBound clears the port's mark and reports whether it was set.
func (st *sinkState) takeBound(port uint16) bool {
	bit := uint64(1) << (port % 64)
	was := st.boundPorts[port/64]&bit != 0
	st.boundPorts[port/64] &^= bit
	return was
}

// send queues c for the writer, or drops and counts it.
func (s *Store) send(c *change) {
	if s.failed.Load() {
		s.dropped.Add(1)
		return
	}
	select {
	case s.changes <- *c:
	default:
		s.dropped.Add(1)
	}
}

func recordChange(kind changeKind, r *tracer.Record) change {
	return change{
		kind: kind, timeNs: r.TimeNs, pid: r.PID, comm: r.Comm, via: r.OwnerVia,
		socket: Socket{Proto: r.Proto, NetNS: r.NetNS, Addr: r.SAddr, Port: r.SPort},
	}
}

// Record implements tracer.Sink. It allocates nothing and never blocks.
func (s *Store) Record(r *tracer.Record) {
	st := &s.sink
	if r.Type != tracer.RecordSocket {
		s.endSnapshot(r.TimeNs)
	}
	switch r.Type {
	case tracer.RecordBind:
		if r.Err != 0 {
			c := recordChange(changeBindFailed, r)
			c.errno = r.Err
			s.send(&c)
		} else if r.SPort != 0 {
			st.markBound(r.SPort)
			c := recordChange(changeBound, r)
			s.send(&c)
		}
	case tracer.RecordListen:
		st.listeners[r.SPort]++
		st.takeBound(r.SPort)
		c := recordChange(changeListening, r)
		s.send(&c)
	case tracer.RecordSocket:
		s.seen(r)
	case tracer.RecordOwner:
		// A listener or a bound socket changing hands ends one holder
		// and starts the next; a connection's owner is not history's.
		if r.New == tracer.StateListen || r.Proto == tracer.ProtoUDP || r.New == tracer.StateClose {
			c := recordChange(changeOwner, r)
			c.prevPID = r.Prev.PID
			s.send(&c)
		}
	case tracer.RecordState:
		if r.Old == tracer.StateListen {
			if r.New == tracer.StateClose {
				st.listeners[r.SPort] -= min(st.listeners[r.SPort], 1)
				c := recordChange(changeListenClosed, r)
				s.send(&c)
			}
			break
		}
		s.countConnection(r)
		if (r.New == tracer.StateClose || r.New == tracer.StateTimeWait) && st.takeBound(r.SPort) {
			c := recordChange(changeConnEnded, r)
			s.send(&c)
		}
	}
	if r.TimeNs-st.flushedNs >= countsFlushNs {
		st.flushCounts(s)
		st.flushedNs = r.TimeNs
	}
}

// seen passes on a socket of the start-up snapshot that a process holds
// on a port: a listener, or a bound socket (TCP not listening, UDP not
// connected).
func (s *Store) seen(r *tracer.Record) {
	if r.PID == 0 || r.SPort == 0 {
		return
	}
	c := recordChange(changeSeen, r)
	switch {
	case r.Proto != tracer.ProtoUDP && r.New == tracer.StateListen:
		s.sink.listeners[r.SPort]++
		c.listening = true
	case r.Proto != tracer.ProtoUDP && r.New == tracer.StateClose, r.Proto == tracer.ProtoUDP && r.DPort == 0:
		s.sink.markBound(r.SPort)
	default:
		return
	}
	s.send(&c)
}

// AwaitSnapshot says the lines of the start-up snapshot given to the
// loop (Loop.Seed) are dated atNs. The loop takes that snapshot after the
// events older than it, whose records and ticks, dated earlier, do not end
// it. Call it before the loop runs.
func (s *Store) AwaitSnapshot(atNs int64) { s.sink.snapshotAtNs = atNs }

// endSnapshot tells the writer, once, that the start-up snapshot (if any)
// is over: at timeNs, a record's or a tick's after the snapshot.
func (s *Store) endSnapshot(timeNs int64) {
	if s.sink.seenAll || timeNs <= s.sink.snapshotAtNs {
		return
	}
	s.sink.seenAll = true
	s.send(&change{kind: changeSeenAll, timeNs: timeNs})
}

// countConnection counts a connection opening (into ESTABLISHED) or
// closing (out of it), under its local port if it came in through a
// listener, else under its remote port.
func (s *Store) countConnection(r *tracer.Record) {
	opened := r.New == tracer.StateEstablished
	if !opened && r.Old != tracer.StateEstablished {
		return
	}
	st := &s.sink
	dir, port := outbound, r.DPort
	if r.OwnerVia == tracer.OwnerAccept || r.OwnerVia == tracer.OwnerListener ||
		(r.OwnerVia != tracer.OwnerConnect && st.listeners[r.SPort] > 0) {
		dir, port = inbound, r.SPort
	}
	minute := r.TimeNs / 60e9
	if minute > st.minute {
		st.flushCounts(s)
		st.minute = minute
	}
	c := &st.counts[dir][port]
	if *c == (ConnCounts{}) {
		st.touched = append(st.touched, uint32(dir)<<16|uint32(port))
	}
	if opened {
		c.Opened++
	} else {
		c.Closed++
	}
}

// flushCounts hands the minute's counts so far to the writer.
func (st *sinkState) flushCounts(s *Store) {
	for _, t := range st.touched {
		dir, port := t>>16, uint16(t)
		c := change{kind: changeCounts, minute: st.minute, socket: Socket{Port: port}}
		if dir == inbound {
			c.counts.Inbound = st.counts[dir][port]
		} else {
			c.counts.Outbound = st.counts[dir][port]
		}
		st.counts[dir][port] = ConnCounts{}
		s.send(&c)
	}
	st.touched = st.touched[:0]
}

// Tick implements tracer.Sink: the snapshot is over if it was not yet, and
// counts gathered for countsFlushNs go to the writer; counts that must
// still wait ask for the tick that will send them.
func (s *Store) Tick(nowNs int64) int64 {
	s.endSnapshot(nowNs)
	if nowNs-s.sink.flushedNs >= countsFlushNs {
		s.sink.flushCounts(s)
		s.sink.flushedNs = nowNs
	}
	if len(s.sink.touched) > 0 {
		return s.sink.flushedNs + countsFlushNs
	}
	return tracer.NoDeadline
}
