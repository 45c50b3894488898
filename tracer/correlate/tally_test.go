package correlate

import (
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

type discardOutput struct{ discard }

func (discardOutput) Connection(*tracer.Connection) {}

// tally runs events through a correlator into a Tally.
func tally(t *testing.T, events []tracer.Event) Counts {
	t.Helper()
	tl := NewTally(discardOutput{})
	c := NewCorrelator(tl.Record)
	feed(t, c, events)
	c.Flush()
	return tl.Counts()
}

func TestTallyCountsConnectionsAndSocketsApart(t *testing.T) {
	got := tally(t, append(localConnection(),
		state(70_000, atClient, clientSock+1, tracer.StateClose, tracer.StateSynSent, client),
		withErr(state(70_001, atClient, clientSock+1, tracer.StateSynSent, tracer.StateClose, softirq), econnrefused),
	))
	want := Counts{Lines: 14, SocketsOpened: 2, SocketsClosed: 2, ConnectionsOpened: 1, ConnectionsClosed: 1, ConnectsFailed: 1, Refused: 1}
	want.Transitions[tracer.StateListen] = 1
	want.Transitions[tracer.StateSynSent] = 2
	want.Transitions[tracer.StateSynRecv] = 1
	want.Transitions[tracer.StateEstablished] = 2
	want.Transitions[tracer.StateFinWait1] = 1
	want.Transitions[tracer.StateFinWait2] = 1
	want.Transitions[tracer.StateTimeWait] = 1
	want.Transitions[tracer.StateCloseWait] = 1
	want.Transitions[tracer.StateLastAck] = 1
	want.Transitions[tracer.StateClose] = 3
	if got != want {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestTallyCountsConnectionLines(t *testing.T) {
	tl := NewTally(discardOutput{})
	cs := NewConnections(tl)
	c := NewCorrelator(cs.Record)
	for _, e := range append(localConnection(),
		state(70_000, atClient, clientSock+1, tracer.StateClose, tracer.StateSynSent, client),
		withErr(state(70_001, atClient, clientSock+1, tracer.StateSynSent, tracer.StateClose, softirq), econnrefused),
	) {
		if e.Kind != 0 {
			c.Handle(&e)
		}
	}
	got := tl.Counts()
	if got.Lines != 2 || got.ConnectionsOpened != 1 || got.ConnectionsClosed != 1 || got.SocketsOpened != 2 || got.SocketsClosed != 2 ||
		got.ConnectsFailed != 1 || got.Refused != 1 || got.Transitions[tracer.StateTimeWait] != 1 ||
		// The server's LAST_ACK -> CLOSE, the client's TIME_WAIT -> CLOSE
		// and the refused connect's, as the lines' own tally counts them
		// (TestTallyCountsConnectionsAndSocketsApart).
		got.Transitions[tracer.StateClose] != 3 {
		t.Errorf("got %+v", got)
	}
}

// TestTallyCountsConnectionsOnlyWhoseOpeningItSaw: with the opening
// filtered out, the closes of a local connection's two sockets count as
// sockets only.
func TestTallyCountsConnectionsOnlyWhoseOpeningItSaw(t *testing.T) {
	tl := NewTally(discardOutput{})
	c := NewCorrelator(func(r *tracer.Record) {
		if r.New != tracer.StateEstablished {
			tl.Record(r)
		}
	})
	for _, e := range localConnection() {
		if e.Kind != 0 {
			c.Handle(&e)
		}
	}
	if got := tl.Counts(); got.SocketsClosed != 2 || got.ConnectionsClosed != 0 || got.ConnectionsOpened != 0 {
		t.Errorf("got %+v", got)
	}
}

// TestTallyCountsClosesOfConnectionsFoundAtStart: a local connection whose
// two sockets a watch with --port found at its start counts once closed,
// as its --connections line does, and not as opened.
func TestTallyCountsClosesOfConnectionsFoundAtStart(t *testing.T) {
	tl := NewTally(discardOutput{})
	c := NewCorrelator(tl.Record)
	r, _ := oldLocalConnection(tracer.RoleServer)
	c.Seed(r, 0)
	feed(t, c, localClose())
	if got := tl.Counts(); got.SocketsClosed != 2 || got.ConnectionsClosed != 1 || got.ConnectionsOpened != 0 || got.SocketsOpened != 0 {
		t.Errorf("got %+v", got)
	}
}

// TestTallyCountsConnectionLinesTransitionsSeen: a connection line of a
// connection older than the watch counts the transitions the watch saw,
// not the state its ends were in when first seen, as the lines' own tally
// does.
func TestTallyCountsConnectionLinesTransitionsSeen(t *testing.T) {
	tl := NewTally(discardOutput{})
	cs := NewConnections(tl)
	c := NewCorrelator(cs.Record)
	feed(t, c, []tracer.Event{
		state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
		state(20, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		state(25, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker),
		state(26, atServer, serverSock, tracer.StateLastAck, tracer.StateClose, softirq),
	})
	got := tl.Counts().Transitions
	if got[tracer.StateEstablished] != 0 || got[tracer.StateCloseWait] != 1 || got[tracer.StateLastAck] != 1 || got[tracer.StateClose] != 1 {
		t.Errorf("transitions into ESTABLISHED %d, CLOSE_WAIT %d, LAST_ACK %d, CLOSE %d; want 0, 1, 1, 1",
			got[tracer.StateEstablished], got[tracer.StateCloseWait], got[tracer.StateLastAck], got[tracer.StateClose])
	}
}
