package correlate

import "github.com/porttrace/porttrace/tracer"

// Counts count the lines a watch showed, for its summary: what passed its
// filters, not everything the correlator saw (Stats).
type Counts struct {
	// Lines are the lines shown: transitions, binds, connections.
	Lines uint64
	// Sockets opened reached ESTABLISHED; closed, they went into
	// TIME_WAIT or CLOSE from ESTABLISHED or a later state.
	SocketsOpened, SocketsClosed uint64
	// Connections count a local connection's two sockets once: it opened
	// with its first socket to reach ESTABLISHED, and closed with its
	// last to close. Only connections whose opening or at-start lines
	// were shown are counted closed (where the filters hide both, or a
	// watch of every port prints no at-start lines, nothing tells the two
	// sockets of one connection from two connections).
	ConnectionsOpened, ConnectionsClosed uint64
	Transitions                          [tracer.StateCount]uint64
	Binds, BindErrors                    uint64
	// ConnectsFailed are connects that never connected (SYN_SENT ->
	// CLOSE), of which Refused were refused (ECONNREFUSED) and TimedOut
	// not answered (ETIMEDOUT); the rest their process gave up on.
	ConnectsFailed, Refused, TimedOut uint64
}

// Linux errnos of failed connects.
const (
	errnoTimedOut = 110
	errnoRefused  = 111
)

// Tally counts the lines that reach it and passes them on: placed behind
// a watch's filters, it counts what the watch shows.
type Tally struct {
	next   tracer.Output
	counts Counts
	// open are the shown sockets established and not closed yet, by
	// their four addresses: a socket whose peer is among them is the
	// other end of a connection already counted.
	open map[tupleKey]struct{}
}

var _ tracer.Output = (*Tally)(nil)

// NewTally returns a Tally in front of next.
func NewTally(next tracer.Output) *Tally {
	return &Tally{next: next, open: map[tupleKey]struct{}{}}
}

// Counts returns the counts so far.
func (t *Tally) Counts() Counts { return t.counts }

// Record implements tracer.Sink.
func (t *Tally) Record(r *tracer.Record) {
	n := &t.counts
	n.Lines++
	switch r.Type {
	case tracer.RecordBind:
		n.Binds++
		if r.Err != 0 {
			n.BindErrors++
		}
	case tracer.RecordState, tracer.RecordListen:
		n.Transitions[r.New]++
		t.socket(r)
	case tracer.RecordSocket:
		// Connected before the watch: open, not opened during it, so
		// that its close counts.
		if connected(r.New) {
			t.open[makeTuple(r.NetNS, r.SAddr, r.SPort, r.DAddr, r.DPort)] = struct{}{}
		}
	}
	t.next.Record(r)
}

// socket counts the opening and closing of r's socket and connection.
func (t *Tally) socket(r *tracer.Record) {
	n := &t.counts
	// Whether the other end is open (on this host): asked only of the
	// lines that open or close a socket, two of a connection's ten.
	peerOpen := func() bool {
		_, open := t.open[makeTuple(r.NetNS, r.DAddr, r.DPort, r.SAddr, r.SPort)]
		return open
	}
	switch {
	case r.New == tracer.StateEstablished:
		n.SocketsOpened++
		if !peerOpen() {
			n.ConnectionsOpened++
		}
		t.open[makeTuple(r.NetNS, r.SAddr, r.SPort, r.DAddr, r.DPort)] = struct{}{}
	case r.Old == tracer.StateSynSent && r.New == tracer.StateClose:
		n.ConnectsFailed++
		switch r.Err {
		case errnoRefused:
			n.Refused++
		case errnoTimedOut:
			n.TimedOut++
		}
	case r.New == tracer.StateTimeWait || r.New == tracer.StateClose && connected(r.Old):
		// Its one close: a socket handed over to a timewait socket has
		// no line of its own into CLOSE, and TIME_WAIT -> CLOSE is the
		// timewait socket going.
		n.SocketsClosed++
		key := makeTuple(r.NetNS, r.SAddr, r.SPort, r.DAddr, r.DPort)
		if _, opened := t.open[key]; opened && !peerOpen() {
			n.ConnectionsClosed++
		}
		delete(t.open, key)
	}
}

// connected says a socket in state s has been connected.
func connected(s tracer.State) bool {
	switch s {
	case tracer.StateEstablished, tracer.StateFinWait1, tracer.StateFinWait2, tracer.StateCloseWait, tracer.StateLastAck, tracer.StateClosing:
		return true
	}
	return false
}

// Connection implements tracer.Output: a connection line counts as one
// connection, and each of its traced ends as a socket.
func (t *Tally) Connection(c *tracer.Connection) {
	n := &t.counts
	n.Lines++
	for _, end := range []*tracer.ConnEnd{&c.Client, &c.Server} {
		for _, st := range end.States[:end.NStates] {
			// A state it was in when first seen (a connection older
			// than the watch) is no transition the watch saw.
			if st.DurationNs >= 0 {
				n.Transitions[st.State]++
			}
		}
		if end.Gone {
			n.Transitions[tracer.StateClose]++
		}
	}
	switch {
	case c.Client.Traced && c.Client.NStates == 1 && c.Client.States[0].State == tracer.StateSynSent && !c.Open:
		n.ConnectsFailed++
		switch c.Err {
		case errnoRefused:
			n.Refused++
		case errnoTimedOut:
			n.TimedOut++
		}
	case c.HandshakeNs >= 0:
		n.ConnectionsOpened++
		n.SocketsOpened += ends(c)
		fallthrough
	default:
		// Closed both ways, whether or not its TIME_WAIT is over.
		if c.ClosedNs != 0 {
			n.ConnectionsClosed++
			n.SocketsClosed += ends(c)
		}
	}
	t.next.Connection(c)
}

// ends counts a connection's traced ends.
func ends(c *tracer.Connection) uint64 {
	var n uint64
	if c.Client.Traced {
		n++
	}
	if c.Server.Traced {
		n++
	}
	return n
}

// Tick implements tracer.Sink.
func (t *Tally) Tick(nowNs int64) int64 { return t.next.Tick(nowNs) }
