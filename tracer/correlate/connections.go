package correlate

import (
	"cmp"
	"slices"

	"github.com/porttrace/porttrace/tracer"
)

// connCapacity bounds the connections followed at once (about 600 bytes
// each): more than the TIME_WAIT sockets the kernel keeps by default on a
// small machine (tcp_max_tw_buckets). Connections met while it is full
// are not followed, and counted.
const connCapacity = 1 << 16

// Connections is a Sink that makes connection lines out of the lines of
// their sockets: when a connection's last socket goes (a TIME_WAIT
// ending, for the end that closed first), it passes on one Connection with
// both its ends' owners and every state they passed through. The two
// sockets of a local connection have the same four addresses, the other
// way round: Connections joins them into one.
//
// Give it lines in time order (behind a Window), so that a socket's lines
// come after its peer's handshake. It runs on the loop's goroutine and
// allocates only when its table grows; Flush passes on the connections
// still open when the watch stops.
type Connections struct {
	next tracer.ConnectionSink
	// ends finds a connection by a traced end's four addresses: the index
	// of its entry times two, plus one for its server end.
	ends       map[tupleKey]int32
	entries    []connEntry
	free       []int32
	live       int
	capacity   int
	unfollowed uint64
}

// connEntry is a connection being followed.
type connEntry struct {
	c    tracer.Connection
	live bool
	// Per end (0: client, 1: server): its four addresses, its current
	// state's place in its States and when it entered it (0 if unseen),
	// when it closed both ways (entered CLOSE or TIME_WAIT) and whether
	// it is gone.
	keys      [2]tupleKey
	current   [2]uint8
	enteredNs [2]int64
	closedNs  [2]int64
	gone      [2]bool
	// closes[i] says end i started the close (FIN or abort), and
	// closedBy[i] that end i saw the other end start it (a FIN, a reset).
	closes   [2]bool
	closedBy [2]bool
}

// NewConnections returns a Connections that passes its connections to
// next.
func NewConnections(next tracer.ConnectionSink) *Connections {
	return &Connections{next: next, ends: map[tupleKey]int32{}, capacity: connCapacity}
}

// Unfollowed counts the connections not followed because the table was
// full.
func (cs *Connections) Unfollowed() uint64 { return cs.unfollowed }

// Tick implements tracer.Sink.
func (cs *Connections) Tick(nowNs int64) int64 { return cs.next.Tick(nowNs) }

// Record implements tracer.Sink.
func (cs *Connections) Record(r *tracer.Record) {
	switch {
	case r.Type == tracer.RecordBind:
		return
	case r.DPort == 0:
		return // not connected: no connection
	case r.Type == tracer.RecordSocket && r.New == tracer.StateTimeWait:
		// Found in TIME_WAIT at the start: its connection closed before
		// the watch (its TIME_WAIT -> CLOSE line is left out too, in
		// find).
		return
	}
	i, side, ok := cs.find(r)
	if !ok {
		return
	}
	cs.update(&cs.entries[i], side, r)
	cs.finishIfGone(i, r.TimeNs)
}

// finishIfGone passes entry i on if every traced end of it is gone.
func (cs *Connections) finishIfGone(i int32, nowNs int64) {
	e := &cs.entries[i]
	if (!e.c.Client.Traced || e.gone[0]) && (!e.c.Server.Traced || e.gone[1]) {
		e.c.EndNs = nowNs
		cs.finish(i)
	}
}

// opens says r is the first line of a new socket: a connect, or a
// connection arriving on a listener.
func opens(r *tracer.Record) bool {
	return r.Type == tracer.RecordState && (r.Old == tracer.StateClose || r.Old == tracer.StateListen)
}

// Flush passes on the connections still open, as the watch stops at
// nowNs, in the order they opened.
func (cs *Connections) Flush(nowNs int64) {
	var open []int32
	for i := range cs.entries {
		if cs.entries[i].live {
			open = append(open, int32(i))
		}
	}
	slices.SortFunc(open, func(a, b int32) int {
		return cmp.Compare(cs.entries[a].c.StartNs, cs.entries[b].c.StartNs)
	})
	for _, i := range open {
		e := &cs.entries[i]
		for side := range 2 {
			if end := e.end(side); end.Traced && !e.gone[side] && e.enteredNs[side] != 0 {
				leave(end, e.current[side], nowNs-e.enteredNs[side])
			}
		}
		e.c.EndNs, e.c.Open = nowNs, true
		cs.finish(i)
	}
}

// find returns the entry and end of r's socket: known, the missing end of
// a known connection, or a new connection's.
func (cs *Connections) find(r *tracer.Record) (int32, int, bool) {
	key := makeTuple(r.NetNS, r.SAddr, r.SPort, r.DAddr, r.DPort)
	if v, ok := cs.ends[key]; ok {
		i, side := v/2, int(v%2)
		e := &cs.entries[i]
		if !opens(r) {
			if r.Old == tracer.StateTimeWait && !e.inTimeWait(side) {
				// The end of a timewait socket whose ends a newer
				// socket took: its connection ended then.
				return 0, 0, false
			}
			return i, side, true
		}
		switch {
		case e.inTimeWait(side):
			// A new socket at a timewait socket's ends (a client's
			// next connect, tcp_tw_reuse; a server's next SYN): the
			// kernel kills the timewait socket for it, after the new
			// socket's first line.
			killed := tracer.Record{Type: tracer.RecordState, TimeNs: r.TimeNs, Old: tracer.StateTimeWait, New: tracer.StateClose,
				DurationNs: r.TimeNs - e.enteredNs[side], Reason: ReasonKilled}
			cs.update(e, side, &killed)
			cs.finishIfGone(i, r.TimeNs)
		case e.foundAtStartOnly():
			// The snapshot caught it opening (an opening whose
			// events came after the snapshot was complete, late): the
			// same connection, whose lines from its opening say more.
			cs.discard(i)
		default:
			// A new socket at the addresses of one whose end no line
			// said (its events lost): that one is over.
			e.gone[side] = true
			delete(cs.ends, key)
			cs.finishIfGone(i, r.TimeNs)
		}
	}
	if r.Old == tracer.StateTimeWait {
		// A timewait socket found at the start goes: its connection
		// closed before the watch.
		return 0, 0, false
	}
	// The other end of a known connection: the peer's handshake came
	// first, so the roles are settled (or, for a connection older than
	// the watch, unknown on both sides).
	peer := makeTuple(r.NetNS, r.DAddr, r.DPort, r.SAddr, r.SPort)
	if v, ok := cs.ends[peer]; ok {
		if i, side := v/2, 1-int(v%2); cs.entries[i].joinable(side, r) {
			if role := roleOf(r); role >= 0 && role != side && !cs.entries[i].c.RolesKnown {
				// The peer stood as the client for want of knowing;
				// this end says otherwise.
				cs.swapEnds(i)
				side = role
			}
			cs.place(i, side, key, r)
			return i, side, true
		}
	}
	if r.Type == tracer.RecordOwner {
		// A change of hands says nothing of a connection's states:
		// the socket's next line starts its connection.
		return 0, 0, false
	}
	if cs.live >= cs.capacity {
		cs.unfollowed++
		return 0, 0, false
	}
	i := cs.alloc()
	e := &cs.entries[i]
	// Where nothing says, the end seen first stands as the client.
	side := max(roleOf(r), 0)
	e.c.Proto, e.c.NetNS, e.c.HandshakeNs = tracer.ProtoTCP, r.NetNS, -1
	e.c.StartNs = r.TimeNs
	e.c.OpenSeen = opens(r)
	other := e.end(1 - side)
	other.Family, other.Addr, other.Port = r.Family, r.DAddr, r.DPort
	cs.place(i, side, key, r)
	return i, side, true
}

// inTimeWait says end side of the entry is in TIME_WAIT.
func (e *connEntry) inTimeWait(side int) bool {
	end := e.end(side)
	return !e.gone[side] && end.NStates > 0 && end.States[e.current[side]].State == tracer.StateTimeWait
}

// foundAtStartOnly says all the entry holds is what the watch's at-start
// lines said: no transition of either end.
func (e *connEntry) foundAtStartOnly() bool {
	return !e.c.OpenSeen && e.enteredNs == [2]int64{} && e.gone == [2]bool{}
}

// discard drops entry i without a line.
func (cs *Connections) discard(i int32) {
	e := &cs.entries[i]
	for side := range 2 {
		if e.end(side).Traced {
			delete(cs.ends, e.keys[side])
		}
	}
	cs.release(i)
}

// release frees entry i's place in the table.
func (cs *Connections) release(i int32) {
	cs.entries[i].live = false
	cs.live--
	cs.free = append(cs.free, i)
}

// swapEnds turns entry i's ends round: the end placed as the client was
// only the one seen first.
func (cs *Connections) swapEnds(i int32) {
	e := &cs.entries[i]
	e.c.Client, e.c.Server = e.c.Server, e.c.Client
	e.keys[0], e.keys[1] = e.keys[1], e.keys[0]
	e.current[0], e.current[1] = e.current[1], e.current[0]
	e.enteredNs[0], e.enteredNs[1] = e.enteredNs[1], e.enteredNs[0]
	e.closedNs[0], e.closedNs[1] = e.closedNs[1], e.closedNs[0]
	e.gone[0], e.gone[1] = e.gone[1], e.gone[0]
	e.closes[0], e.closes[1] = e.closes[1], e.closes[0]
	e.closedBy[0], e.closedBy[1] = e.closedBy[1], e.closedBy[0]
	for side, key := range e.keys {
		if e.end(side).Traced && !e.gone[side] {
			cs.ends[key] = i*2 + int32(side)
		}
	}
}

// joinable says r's socket, new to Connections, is end side of entry e,
// whose other end is its peer: a socket that is opening joins only a peer
// that opened the other way during the watch and has not closed (not an
// older socket at the same addresses).
func (e *connEntry) joinable(side int, r *tracer.Record) bool {
	if e.end(side).Traced {
		return false
	}
	if !opens(r) {
		return true
	}
	other := e.end(1 - side)
	if !e.c.OpenSeen || e.closedNs[1-side] != 0 || other.NStates == 0 {
		return false
	}
	first := other.States[0].State
	return (first == tracer.StateSynSent || first == tracer.StateSynRecv) && first != r.New
}

// roleOf is the end a socket's line says it is: 0 for the client, 1 for
// the server, -1 where it does not say. The correlator knows it from the
// socket's opening or, for one older than the watch, from the listeners.
func roleOf(r *tracer.Record) int {
	switch r.Role {
	case tracer.RoleClient:
		return 0
	case tracer.RoleServer:
		return 1
	}
	return -1
}

func (cs *Connections) alloc() int32 {
	var i int32
	if n := len(cs.free); n > 0 {
		i = cs.free[n-1]
		cs.free = cs.free[:n-1]
	} else {
		cs.entries = append(cs.entries, connEntry{})
		i = int32(len(cs.entries) - 1)
	}
	cs.entries[i] = connEntry{live: true}
	cs.live++
	return i
}

// place makes r's socket end side of entry i.
func (cs *Connections) place(i int32, side int, key tupleKey, r *tracer.Record) {
	e := &cs.entries[i]
	end := e.end(side)
	end.Traced, end.Family, end.Addr, end.Port = true, r.Family, r.SAddr, r.SPort
	e.keys[side] = key
	cs.ends[key] = i*2 + int32(side)
	if roleOf(r) >= 0 {
		e.c.RolesKnown = true
	}
}

func (e *connEntry) end(side int) *tracer.ConnEnd {
	if side == 0 {
		return &e.c.Client
	}
	return &e.c.Server
}

// update takes what r says of end side.
func (cs *Connections) update(e *connEntry, side int, r *tracer.Record) {
	end := e.end(side)
	if r.PID != 0 || end.PID == 0 {
		end.Process, end.OwnerVia, end.OwnerExited = r.Process, r.OwnerVia, r.OwnerExited
	}
	switch r.Type {
	case tracer.RecordSocket:
		// Found at the start of the watch, in New since when is unknown.
		e.current[side] = enter(end, r.New)
		return
	case tracer.RecordOwner:
		return
	}
	if end.NStates == 0 && r.Old != tracer.StateClose && r.Old != tracer.StateListen && r.Old != tracer.StateUnknown {
		// Its first line leaves a state porttrace did not see it enter
		// (a passive socket's first leaves its listener's LISTEN).
		e.current[side] = enter(end, r.Old)
	}
	if end.NStates > 0 && end.States[e.current[side]].State == r.Old {
		leave(end, e.current[side], r.DurationNs)
	}
	if r.New == tracer.StateEstablished && (r.Old == tracer.StateSynSent || r.Old == tracer.StateSynRecv && e.c.HandshakeNs < 0) {
		e.c.HandshakeNs = r.DurationNs
	}
	e.closing(side, r)
	switch r.New {
	case tracer.StateClose:
		// Gone: its addresses are free for the next socket.
		e.gone[side] = true
		end.Gone = true
		delete(cs.ends, e.keys[side])
		if e.closedNs[side] == 0 {
			e.closedNs[side] = r.TimeNs
		}
		end.Reason = r.Reason
		if r.Err != 0 {
			end.Err = r.Err
			if e.c.Err == 0 {
				e.c.Err = r.Err
			}
		}
		return
	case tracer.StateTimeWait:
		e.closedNs[side] = r.TimeNs
	}
	e.current[side] = enter(end, r.New)
	e.enteredNs[side] = r.TimeNs
}

// enter adds state s to an end's states, or finds it there if the end was
// in it before, and returns its place.
func enter(end *tracer.ConnEnd, s tracer.State) uint8 {
	for i := range end.NStates {
		if end.States[i].State == s {
			return i
		}
	}
	if end.NStates == tracer.MaxConnStates {
		return end.NStates - 1 // no TCP socket goes through as many
	}
	end.States[end.NStates] = tracer.StateTime{State: s, DurationNs: -1}
	end.NStates++
	return end.NStates - 1
}

// leave adds a stay of durationNs (-1 if unknown) to the state at place i.
func leave(end *tracer.ConnEnd, i uint8, durationNs int64) {
	st := &end.States[i]
	switch {
	case durationNs < 0:
	case st.DurationNs < 0:
		st.DurationNs = durationNs
	default:
		st.DurationNs += durationNs
	}
}

// closing notes, from end side's line r, who started the close.
func (e *connEntry) closing(side int, r *tracer.Record) {
	if r.Old != tracer.StateEstablished && r.Old != tracer.StateSynRecv {
		return
	}
	switch {
	case r.New == tracer.StateFinWait1:
		e.closes[side] = true
	case r.New == tracer.StateCloseWait:
		e.closedBy[side] = true
	case r.New == tracer.StateClose && r.Err != 0:
		e.closedBy[side] = true // reset by the other end
	case r.New == tracer.StateClose:
		e.closes[side] = true // aborted: this end sent the reset
	}
}

// finish passes entry i on and forgets it.
func (cs *Connections) finish(i int32) {
	e := &cs.entries[i]
	client, server := e.closes[0] || e.closedBy[1], e.closes[1] || e.closedBy[0]
	switch {
	case client && server:
		e.c.ClosedFirst = tracer.CloserBoth
	case client:
		e.c.ClosedFirst = tracer.CloserClient
	case server:
		e.c.ClosedFirst = tracer.CloserServer
	}
	closed := true
	for side := range 2 {
		if !e.end(side).Traced {
			continue
		}
		if !e.gone[side] {
			delete(cs.ends, e.keys[side])
		}
		closed = closed && e.closedNs[side] != 0
		e.c.ClosedNs = max(e.c.ClosedNs, e.closedNs[side])
	}
	if !closed {
		e.c.ClosedNs = 0
	}
	cs.next.Connection(&e.c)
	cs.release(i)
}
