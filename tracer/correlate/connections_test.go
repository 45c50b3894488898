package correlate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// connections runs events through a correlator, a window and a
// Connections, as a watch with --connections does, and stops at endMs.
func connections(events []tracer.Event, endMs int64) ([]string, *Connections) {
	return startedConnections(func(*Correlator) {}, events, endMs)
}

// adoptedConnections is connections for a watch of every port that
// adopted the sockets of r at its start.
func adoptedConnections(r *snapshot.PortReport, events []tracer.Event, endMs int64) ([]string, *Connections) {
	return startedConnections(func(c *Correlator) { c.Adopt(r, 0) }, events, endMs)
}

// startedConnections is connections for a watch that start starts from a
// snapshot.
func startedConnections(start func(*Correlator), events []tracer.Event, endMs int64) ([]string, *Connections) {
	var out []string
	cs := NewConnections(connFunc(func(c *tracer.Connection) { out = append(out, connLine(c)) }))
	w := NewWindow(cs)
	c := NewCorrelator(w.Record)
	w.Follow(c)
	start(c)
	for i := range events {
		if events[i].Kind == 0 {
			c.Tick(events[i].TimeNs)
			w.Tick(events[i].TimeNs)
			continue
		}
		c.Handle(&events[i])
	}
	c.Flush()
	w.Flush()
	cs.Flush(endMs * 1e6)
	return out, cs
}

type connFunc func(*tracer.Connection)

func (f connFunc) Connection(c *tracer.Connection) { f(c) }
func (connFunc) Tick(int64) int64                  { return tracer.NoDeadline }

// connLine renders a connection compactly: each end's address, owner and
// states with their ms, then the connection's times in ms.
func connLine(c *tracer.Connection) string {
	end := func(e *tracer.ConnEnd) string {
		s := fmt.Sprintf("%s:%d", e.Addr, e.Port)
		if !e.Traced {
			return s + " untraced"
		}
		s += fmt.Sprintf(" %d/%s [", e.PID, e.OwnerVia)
		for i, st := range e.States[:e.NStates] {
			if i > 0 {
				s += " "
			}
			s += st.State.String()
			if st.DurationNs >= 0 {
				s += fmt.Sprint(":", st.DurationNs/1e6)
			}
		}
		s += "]"
		if e.Reason != "" {
			s += " " + e.Reason
		}
		if e.Err != 0 {
			s += " " + tracer.ErrnoName(e.Err)
		}
		return s
	}
	s := fmt.Sprintf("client %s | server %s | start %d end %d", end(&c.Client), end(&c.Server), c.StartNs/1e6, c.EndNs/1e6)
	if c.HandshakeNs >= 0 {
		s += fmt.Sprint(" handshake ", c.HandshakeNs/1e6)
	}
	if life := c.LifetimeNs(); life >= 0 {
		s += fmt.Sprint(" life ", life/1e6)
	}
	s += " first " + c.ClosedFirst.String()
	if !c.RolesKnown {
		s += " roles-unknown"
	}
	if c.Err != 0 {
		s += " " + tracer.ErrnoName(c.Err)
	}
	if c.Open {
		s += " open"
	}
	return s
}

// localConnection is one connection between two traced sockets: the
// client connects at 10 ms and closes first at 20, its TIME_WAIT expiring
// 60 s after 30; the server accepts and closes at 25.
func localConnection() []tracer.Event {
	events := append(handshake(), ev(13, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker))
	return append(append(events, localClose()...),
		timewait(60_026, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 0),
		timewait(60_026, tracer.KindTimeWaitExpire, tracer.StateTimeWait, 0),
		tick(61_100),
	)
}

// localClose is localConnection's close: the client's at 20 ms, the
// server's at 25, into the client's TIME_WAIT.
func localClose() []tracer.Event {
	return []tracer.Event{
		state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
		state(21, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		state(21, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
		state(25, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker),
		timewait(26, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000),
		state(26, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
		state(26, atServer, serverSock, tracer.StateLastAck, tracer.StateClose, softirq),
		tick(2_000),
	}
}

func TestConnections(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []tracer.Event
		endMs  int64
		want   []string
	}{{
		name:   "a local connection: both ends joined, written when the TIME_WAIT ends",
		events: localConnection(),
		endMs:  62_000,
		want: []string{
			"client 10.0.0.2:40000 300/connect [SYN_SENT:2 ESTABLISHED:8 FIN_WAIT1:1 FIN_WAIT2:5 TIME_WAIT:60000] expired" +
				" | server 10.0.0.1:8080 200/accept [SYN_RECV:1 ESTABLISHED:9 CLOSE_WAIT:4 LAST_ACK:1]" +
				" | start 10 end 60026 handshake 2 life 16 first client",
		},
	}, {
		// Linux reuses a client's own TIME_WAIT ends for its next connect
		// (tcp_tw_reuse), and kills the timewait socket after the new
		// socket's SYN_SENT: the kill ends the first connection, not the
		// second.
		name: "the client's next connection from the ends of its TIME_WAIT",
		events: func() []tracer.Event {
			const nextClient, nextServer tracer.SockID = 0x3500, 0x2500
			events := append(handshake(), ev(13, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker))
			events = append(events, localClose()...)
			return append(events,
				state(3_000, atClient, nextClient, tracer.StateClose, tracer.StateSynSent, client),
				timewait(3_000, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 57_026),
				state(3_001, atServer, nextServer, tracer.StateListen, tracer.StateSynRecv, softirq),
				state(3_001, atServer, nextServer, tracer.StateSynRecv, tracer.StateEstablished, softirq),
				state(3_001, atClient, nextClient, tracer.StateSynSent, tracer.StateEstablished, softirq),
				ev(3_002, tracer.KindAccept, atServer, nextServer, 0, tracer.StateEstablished, worker),
				tick(4_000),
			)
		}(),
		endMs: 5_000,
		want: []string{
			"client 10.0.0.2:40000 300/connect [SYN_SENT:2 ESTABLISHED:8 FIN_WAIT1:1 FIN_WAIT2:5 TIME_WAIT:2974] killed" +
				" | server 10.0.0.1:8080 200/accept [SYN_RECV:1 ESTABLISHED:9 CLOSE_WAIT:4 LAST_ACK:1]" +
				" | start 10 end 3000 handshake 2 life 16 first client",
			"client 10.0.0.2:40000 300/connect [SYN_SENT:1 ESTABLISHED:1999] | server 10.0.0.1:8080 200/accept [SYN_RECV:0 ESTABLISHED:1999]" +
				" | start 3000 end 5000 handshake 1 life 2000 first unknown open",
		},
	}, {
		name: "a refused connect: one end, its error",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			withErr(state(11, atClient, clientSock, tracer.StateSynSent, tracer.StateClose, softirq), econnrefused),
		},
		endMs: 100,
		want: []string{
			"client 10.0.0.2:40000 300/connect [SYN_SENT:1] ECONNREFUSED | server 10.0.0.1:8080 untraced | start 10 end 11 life 1 first unknown ECONNREFUSED",
		},
	}, {
		name: "a reset: the end that sent it closed first",
		events: append(handshake(),
			ev(13, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
			state(30, atServer, serverSock, tracer.StateEstablished, tracer.StateClose, worker),
			withErr(state(30, atClient, clientSock, tracer.StateEstablished, tracer.StateClose, softirq), econnreset),
		),
		endMs: 100,
		want: []string{
			"client 10.0.0.2:40000 300/connect [SYN_SENT:2 ESTABLISHED:18] ECONNRESET" +
				" | server 10.0.0.1:8080 200/accept [SYN_RECV:1 ESTABLISHED:18] | start 10 end 30 handshake 2 life 20 first server ECONNRESET",
		},
	}, {
		name: "still open when the watch stops: the time so far",
		events: append(handshake(),
			ev(13, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
		),
		endMs: 1_012,
		want: []string{
			"client 10.0.0.2:40000 300/connect [SYN_SENT:2 ESTABLISHED:1000] | server 10.0.0.1:8080 200/accept [SYN_RECV:1 ESTABLISHED:1000]" +
				" | start 10 end 1012 handshake 2 life 1002 first unknown open",
		},
	}, {
		name: "older than the watch: the end on a listening port is the server",
		events: []tracer.Event{
			state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
			state(20, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
			state(25, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker),
			state(26, atServer, serverSock, tracer.StateLastAck, tracer.StateClose, softirq),
		},
		endMs: 100,
		want: []string{
			"client 10.0.0.2:40000 untraced | server 10.0.0.1:8080 200/close [ESTABLISHED CLOSE_WAIT:5 LAST_ACK:1] | start 20 end 26 first client",
		},
	}, {
		name: "older than the watch, nothing listening: roles unknown, the end seen first as client",
		events: []tracer.Event{
			state(20, atServer, serverSock, tracer.StateEstablished, tracer.StateFinWait1, worker),
		},
		endMs: 100,
		want: []string{
			"client 10.0.0.1:8080 200/close [ESTABLISHED FIN_WAIT1:80] | server 10.0.0.2:40000 untraced | start 20 end 100 first client roles-unknown open",
		},
	}, {
		name: "a new connection at the addresses of one whose end was lost: that one ends, unseen",
		events: []tracer.Event{
			state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
			state(20, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
			// Its LAST_ACK -> CLOSE and the client's TIME_WAIT were lost.
			state(3_000, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			state(3_001, atServer, serverSock+1, tracer.StateListen, tracer.StateSynRecv, softirq),
			state(3_002, atServer, serverSock+1, tracer.StateSynRecv, tracer.StateEstablished, softirq),
			state(3_002, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq),
			ev(3_003, tracer.KindAccept, atServer, serverSock+1, 0, tracer.StateEstablished, worker),
		},
		endMs: 3_100,
		want: []string{
			"client 10.0.0.2:40000 untraced | server 10.0.0.1:8080 0/unknown [ESTABLISHED CLOSE_WAIT] | start 20 end 3001 first client",
			"client 10.0.0.2:40000 300/connect [SYN_SENT:2 ESTABLISHED:98] | server 10.0.0.1:8080 200/accept [SYN_RECV:1 ESTABLISHED:98] | start 3000 end 3100 handshake 2 life 100 first unknown open",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := connections(tc.events, tc.endMs)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// oldLocalConnection is a local connection older than the watch, as a
// snapshot finds it (the server end's role as given, the client's told by
// its ephemeral port), and the events of its close: the client closes
// first.
func oldLocalConnection(serverRole tracer.Role) (*snapshot.PortReport, []tracer.Event) {
	clientEnd := snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished,
		Local: netip.AddrPortFrom(clientAddr, 40000), Remote: netip.AddrPortFrom(serverAddr, 8080), NetNS: 1,
		Sock: clientSock, PIDs: []uint32{client}, Role: tracer.RoleClient}
	serverEnd := snapshotServer(tracer.ProtoTCP, serverSock)
	serverEnd.Role = serverRole
	r := &snapshot.PortReport{Sockets: []snapshot.PortSocket{serverEnd, clientEnd}, Processes: map[uint32]*proc.Process{
		client: {Identity: proc.Identity{PID: client}, Name: "p300"}, worker: {Identity: proc.Identity{PID: worker}, Name: "p200"}}}
	return r, []tracer.Event{
		state(20, atServer, serverSock, tracer.StateEstablished, tracer.StateFinWait1, worker),
		state(21, atClient, clientSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		state(21, atServer, serverSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
		state(25, atClient, clientSock, tracer.StateCloseWait, tracer.StateLastAck, client),
		state(26, atClient, clientSock, tracer.StateLastAck, tracer.StateClose, softirq),
		state(26, atServer, serverSock, tracer.StateFinWait2, tracer.StateClose, softirq),
	}
}

// oldLocalConnectionLine is oldLocalConnection's line, both ends in place.
const oldLocalConnectionLine = "client 10.0.0.2:40000 300/snapshot [ESTABLISHED CLOSE_WAIT:4 LAST_ACK:1] | server 10.0.0.1:8080 200/snapshot [ESTABLISHED FIN_WAIT1:1 FIN_WAIT2:5]" +
	" | start 20 end 26 first server"

// TestConnectionsOlderThanTheWatchAdopted: a watch of every port adopts
// the sockets older than it without a line for each; the roles of a
// connection's ends come from the snapshot (MarkRoles), so its line names
// client and server, joined as one connection, and the index counts the
// client's socket as a client's (top files it under the server's port).
func TestConnectionsOlderThanTheWatchAdopted(t *testing.T) {
	r, events := oldLocalConnection(tracer.RoleServer)
	c := NewCorrelator(func(*tracer.Record) {})
	c.Adopt(r, 0)
	for _, o := range ownedOf(c) {
		if want := map[int32]tracer.Role{client: tracer.RoleClient, worker: tracer.RoleServer}[int32(o.Process.PID)]; o.Role != want {
			t.Errorf("index: %d's socket has role %d, want %d", o.Process.PID, o.Role, want)
		}
	}
	got, _ := adoptedConnections(r, events, 100)
	wantLines(t, got, []string{oldLocalConnectionLine})
}

// TestConnectionsNoneForTimeWaitFoundAtTheStart: a timewait socket found
// at the start has lines, its end among them, but its connection closed
// before the watch: no connection line, and none counted.
func TestConnectionsNoneForTimeWaitFoundAtTheStart(t *testing.T) {
	timewait := snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait,
		Local: netip.AddrPortFrom(clientAddr, 40000), Remote: netip.AddrPortFrom(serverAddr, 8080), NetNS: 1,
		Timer: snapshot.TimerTimeWait, TimerNs: 20e9}
	r := &snapshot.PortReport{Sockets: []snapshot.PortSocket{timewait}}
	expiry := ev(20_100, tracer.KindTimeWaitExpire, atClient, twSock, 0, tracer.StateTimeWait, softirq)
	got, _ := startedConnections(func(c *Correlator) { c.Seed(r, 0) }, []tracer.Event{tick(1), expiry, tick(21_000)}, 30_000)
	wantLines(t, got, nil)
}

// TestConnectionsRoleOfTheSecondEndPlacesBoth: an end whose role nothing
// tells (a server's connection that outlived its listener) is placed as
// the client for want of knowing; its peer's line, which says it is the
// client, turns the two round (a watch with --port printed such
// connections the wrong way round with roles_known true).
func TestConnectionsRoleOfTheSecondEndPlacesBoth(t *testing.T) {
	r, events := oldLocalConnection(tracer.RoleUnknown)
	got, _ := adoptedConnections(r, events, 100)
	wantLines(t, got, []string{oldLocalConnectionLine})
}

// TestConnectionsOpenedDuringTheSnapshot: a connection made while the
// watch's snapshot was taken is in the snapshot, and its opening's lines,
// late, follow its at-start lines: one
// connection, from its opening, not also one ended by it that held
// nothing but its state at the start.
func TestConnectionsOpenedDuringTheSnapshot(t *testing.T) {
	r, _ := oldLocalConnection(tracer.RoleServer)
	got, _ := startedConnections(func(c *Correlator) { c.Seed(r, 5e6) }, append(handshake(),
		ev(13, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
	), 1_012)
	wantLines(t, got, []string{
		"client 10.0.0.2:40000 300/connect [SYN_SENT:2 ESTABLISHED:1000] | server 10.0.0.1:8080 200/snapshot [SYN_RECV:1 ESTABLISHED:1000]" +
			" | start 10 end 1012 handshake 2 life 1002 first unknown open",
	})
}

// TestConnectionsNoneFromAChangeOfHands: an OWNER line of a socket no
// line has shown yet makes no connection of its own (a watch printed one
// with no states at all); the socket's next line starts it.
func TestConnectionsNoneFromAChangeOfHands(t *testing.T) {
	cs := NewConnections(connFunc(func(c *tracer.Connection) { t.Errorf("a connection line: %s", connLine(c)) }))
	cs.Record(&tracer.Record{Type: tracer.RecordOwner, New: tracer.StateEstablished, NetNS: 1, SAddr: clientAddr, SPort: 40000, DAddr: serverAddr, DPort: 8080,
		Process: tracer.Process{PID: client}, OwnerVia: tracer.OwnerClose})
	cs.Flush(100)
}

// TestConnectionsTableBounded: a full table follows no more connections,
// counts those, and takes new ones again once others have ended.
func TestConnectionsTableBounded(t *testing.T) {
	var ended int
	cs := NewConnections(connFunc(func(*tracer.Connection) { ended++ }))
	cs.capacity = 2
	for i := range uint16(4) {
		r := tracer.Record{TimeNs: int64(i) * 1e6, Type: tracer.RecordState, Old: tracer.StateClose, New: tracer.StateSynSent,
			SAddr: clientAddr, SPort: 40000 + i, DAddr: serverAddr, DPort: 8080, DurationNs: -1}
		cs.Record(&r)
	}
	if cs.Unfollowed() != 2 || cs.live != 2 {
		t.Fatalf("%d unfollowed, %d followed; want 2 and 2", cs.Unfollowed(), cs.live)
	}
	r := tracer.Record{TimeNs: 9e6, Type: tracer.RecordState, Old: tracer.StateSynSent, New: tracer.StateClose,
		SAddr: clientAddr, SPort: 40000, DAddr: serverAddr, DPort: 8080, DurationNs: 9e6}
	cs.Record(&r)
	r.Old, r.New, r.SPort = tracer.StateClose, tracer.StateSynSent, 40009
	cs.Record(&r)
	if ended != 1 || cs.Unfollowed() != 2 || cs.live != 2 {
		t.Errorf("%d ended, %d unfollowed, %d followed; want 1, 2, 2", ended, cs.Unfollowed(), cs.live)
	}
}

func TestConnectionsAllocateNothingPerRecord(t *testing.T) {
	events := localConnection()
	cs := NewConnections(connFunc(func(*tracer.Connection) {}))
	c := NewCorrelator(cs.Record)
	run := func() {
		for i := range events {
			if events[i].Kind != 0 {
				c.Handle(&events[i])
			}
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations per connection", n)
	}
}
