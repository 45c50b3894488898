package correlate

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"

	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The synthetic connection of these tests: server 10.0.0.1:8080, client
// 10.0.0.2:40000. Processes: listener 100, accepting worker 200, client 300,
// and 7, a bystander interrupted by a softirq.
const (
	listener = 100
	worker   = 200
	client   = 300
	softirq  = 7

	listenSock tracer.SockID = 0x1000
	serverSock tracer.SockID = 0x2000
	clientSock tracer.SockID = 0x3000
	twSock     tracer.SockID = 0x4000
)

var (
	serverAddr = netip.MustParseAddr("10.0.0.1")
	clientAddr = netip.MustParseAddr("10.0.0.2")
)

type side uint8

const (
	atListener side = iota
	atServer
	atClient
)

// ev builds an event at time ms (milliseconds) for one of the sockets.
func ev(ms int64, kind tracer.Kind, at side, sock tracer.SockID, old, new tracer.State, pid uint32) tracer.Event {
	e := tracer.Event{TimeNs: ms * 1e6, Kind: kind, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, Sock: sock,
		OldState: old, NewState: new, Process: tracer.Process{PID: pid, Comm: tracer.CommFrom(fmt.Sprint("p", pid))}, NetNS: 1}
	switch at {
	case atListener:
		e.SAddr, e.SPort, e.DAddr = serverAddr, 8080, netip.IPv4Unspecified()
	case atServer:
		e.SAddr, e.SPort, e.DAddr, e.DPort = serverAddr, 8080, clientAddr, 40000
	case atClient:
		e.SAddr, e.SPort, e.DAddr, e.DPort = clientAddr, 40000, serverAddr, 8080
	}
	return e
}

func state(ms int64, at side, sock tracer.SockID, old, new tracer.State, pid uint32) tracer.Event {
	return ev(ms, tracer.KindState, at, sock, old, new, pid)
}

// Errnos of failed connections, as a state event carries them (negated).
const (
	econnrefused = 111
	econnreset   = 104
)

func withErr(e tracer.Event, errno int32) tracer.Event {
	e.Err = -errno
	return e
}

// tick is a pseudo-event: the source ran dry at this time.
func tick(ms int64) tracer.Event { return tracer.Event{TimeNs: ms * 1e6} }

// line renders a record compactly: "pid comm local>remote OLD->NEW via
// duration [extras]".
func line(r *tracer.Record) string {
	s := fmt.Sprintf("%d %s:%d>%d %s->%s %s", r.PID, r.SAddr, r.SPort, r.DPort, r.Old, r.New, r.OwnerVia)
	if r.DurationNs >= 0 {
		s += fmt.Sprintf(" %dms", r.DurationNs/1e6)
	}
	if r.TimeoutNs > 0 {
		s += fmt.Sprintf(" timeout=%ds", r.TimeoutNs/1e9)
	}
	if r.Reason != "" {
		s += " " + r.Reason
	}
	if r.Err != 0 {
		s += " " + tracer.ErrnoName(r.Err)
	}
	return s
}

func correlate(t *testing.T, events []tracer.Event) []string {
	t.Helper()
	var out []string
	c := NewCorrelator(func(r *tracer.Record) { out = append(out, line(r)) })
	feed(t, c, events)
	c.Flush()
	return out
}

// handshake is a connection opened on a listener owned by 100, with the
// passive side's transitions running in a softirq on pid 7.
func handshake() []tracer.Event {
	return []tracer.Event{
		state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
		state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
		state(11, atServer, serverSock, tracer.StateListen, tracer.StateSynRecv, softirq),
		state(12, atServer, serverSock, tracer.StateSynRecv, tracer.StateEstablished, softirq),
		state(12, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq),
	}
}

func TestCorrelator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []tracer.Event
		want   []string
	}{{
		name: "passive side owned by the accepting worker, not the softirq bystander",
		events: append(handshake(),
			ev(20, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
		),
		want: []string{
			"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 2ms",
			"200 10.0.0.1:8080>40000 LISTEN->SYN_RECV accept",
			"200 10.0.0.1:8080>40000 SYN_RECV->ESTABLISHED accept 1ms",
		},
	}, {
		name: "never accepted: charged to the listener's owner after the hold timeout",
		events: append(handshake(),
			tick(500),
			tick(1011),
		),
		want: []string{
			"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 2ms",
			"100 10.0.0.1:8080>40000 LISTEN->SYN_RECV listener",
			"100 10.0.0.1:8080>40000 SYN_RECV->ESTABLISHED listener 1ms",
		},
	}, {
		name: "accept seen before the handshake's state events (out of order)",
		events: []tracer.Event{
			state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
			ev(12, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
			state(11, atServer, serverSock, tracer.StateListen, tracer.StateSynRecv, softirq),
			state(12, atServer, serverSock, tracer.StateSynRecv, tracer.StateEstablished, softirq),
		},
		want: []string{
			"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
			"200 10.0.0.1:8080>40000 LISTEN->SYN_RECV accept",
			"200 10.0.0.1:8080>40000 SYN_RECV->ESTABLISHED accept 1ms",
		},
	}, {
		name: "a lost event leaves a gap: no duration across it, owner kept",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			// SYN_SENT -> ESTABLISHED was lost.
			state(50, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 connect",
		},
	}, {
		name: "connect's local port is filled in from the next event",
		events: []tracer.Event{
			func() tracer.Event {
				e := state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client)
				e.SPort = 0
				return e
			}(),
			state(12, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 2ms",
		},
	}, {
		name: "a socket porttrace never saw is owned by whoever closes it",
		events: []tracer.Event{
			state(10, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
			state(20, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker),
			state(21, atServer, serverSock, tracer.StateLastAck, tracer.StateClose, softirq),
		},
		want: []string{
			"0 10.0.0.1:8080>40000 ESTABLISHED->CLOSE_WAIT unknown",
			"200 10.0.0.1:8080>40000 CLOSE_WAIT->LAST_ACK close 10ms",
			"200 10.0.0.1:8080>40000 LAST_ACK->CLOSE close 1ms",
		},
	}, {
		name: "active close into TIME_WAIT, which expires",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			state(12, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq),
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			state(21, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
			timewait(30, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000),
			state(30, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
			timewait(60_030, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 0),
			timewait(60_030, tracer.KindTimeWaitExpire, tracer.StateTimeWait, 0),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 2ms",
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 connect 8ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT1->FIN_WAIT2 connect 1ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT2->TIME_WAIT connect 9ms timeout=60s",
			"300 10.0.0.2:40000>8080 TIME_WAIT->CLOSE connect 60000ms expired",
		},
	}, {
		name: "a socket's memory reused unseen while closing: the timewait socket still finds the connection by its new ends",
		events: []tracer.Event{
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			otherClientPort(state(40, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq)),
			otherClientPort(timewait(41, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000)),
			otherClientPort(state(41, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq)),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 close",
			"300 10.0.0.2:40001>8080 FIN_WAIT1->FIN_WAIT2 close 20ms",
			"300 10.0.0.2:40001>8080 FIN_WAIT2->TIME_WAIT close 1ms timeout=60s",
		},
	}, {
		name: "TIME_WAIT killed early: a stopped timer not re-armed within the grace",
		events: []tracer.Event{
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			state(25, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
			timewait(30, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000),
			state(30, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
			timewait(5_000, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 55_030),
			tick(5_050),
			tick(5_100),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 close",
			"300 10.0.0.2:40000>8080 FIN_WAIT1->FIN_WAIT2 close 5ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT2->TIME_WAIT close 5ms timeout=60s",
			"300 10.0.0.2:40000>8080 TIME_WAIT->CLOSE close 4970ms killed",
		},
	}, {
		name: "orphan in FIN_WAIT2 stays FIN_WAIT2, re-armed into TIME_WAIT by the peer's FIN",
		events: []tracer.Event{
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			state(21, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
			timewait(21, tracer.KindTimeWaitStart, tracer.StateFinWait2, 60_000),
			state(21, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
			timewait(40, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 59_981),
			timewait(40, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000),
			tick(1_000),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 close",
			"300 10.0.0.2:40000>8080 FIN_WAIT1->FIN_WAIT2 close 1ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT2->TIME_WAIT close 19ms timeout=60s",
		},
	}, {
		name: "orphan's move to TIME_WAIT unseen by the timer: a local peer's LAST_ACK -> CLOSE tells",
		events: []tracer.Event{
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			state(21, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
			timewait(21, tracer.KindTimeWaitStart, tracer.StateFinWait2, 60_000),
			state(21, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
			state(30, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker),
			state(31, atServer, serverSock, tracer.StateLastAck, tracer.StateClose, softirq),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 close",
			"300 10.0.0.2:40000>8080 FIN_WAIT1->FIN_WAIT2 close 1ms",
			"200 10.0.0.1:8080>40000 CLOSE_WAIT->LAST_ACK close",
			"200 10.0.0.1:8080>40000 LAST_ACK->CLOSE close 1ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT2->TIME_WAIT close 10ms timeout=60s",
		},
	}, {
		name: "the same through a dual-stack server, whose peer addresses are IPv4-mapped",
		events: []tracer.Event{
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			state(21, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
			timewait(21, tracer.KindTimeWaitStart, tracer.StateFinWait2, 60_000),
			state(21, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
			mapped(state(30, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker)),
			mapped(state(31, atServer, serverSock, tracer.StateLastAck, tracer.StateClose, softirq)),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 close",
			"300 10.0.0.2:40000>8080 FIN_WAIT1->FIN_WAIT2 close 1ms",
			"200 ::ffff:10.0.0.1:8080>40000 CLOSE_WAIT->LAST_ACK close",
			"200 ::ffff:10.0.0.1:8080>40000 LAST_ACK->CLOSE close 1ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT2->TIME_WAIT close 10ms timeout=60s",
		},
	}, {
		name: "orphan's move to TIME_WAIT unseen at all: dated from the timer's expiry at the end",
		events: []tracer.Event{
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			state(21, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
			timewait(21, tracer.KindTimeWaitStart, tracer.StateFinWait2, 60_000),
			state(21, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
			// The peer's FIN at 500 ms re-armed the timer to 60.5 s, unseen.
			timewait(60_500, tracer.KindTimeWaitExpire, tracer.StateTimeWait, 0),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 close",
			"300 10.0.0.2:40000>8080 FIN_WAIT1->FIN_WAIT2 close 1ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT2->TIME_WAIT close 479ms timeout=60s",
			"300 10.0.0.2:40000>8080 TIME_WAIT->CLOSE close 60000ms expired",
		},
	}, {
		name: "a timewait socket's address reused by the next connection's timewait socket",
		events: []tracer.Event{
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			state(25, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
			timewait(30, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000),
			state(30, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
			timewait(40, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 59_990),
			// The next connection, from port 40001, gets the same memory
			// for its full and timewait sockets before the grace ends.
			func() tracer.Event {
				e := state(41, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client)
				e.SPort = 40001
				return e
			}(),
			func() tracer.Event {
				e := state(42, atClient, clientSock, tracer.StateSynSent, tracer.StateFinWait1, client)
				e.SPort = 40001
				return e
			}(),
			func() tracer.Event {
				e := state(45, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq)
				e.SPort = 40001
				return e
			}(),
			func() tracer.Event {
				e := timewait(50, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000)
				e.SPort = 40001
				return e
			}(),
			func() tracer.Event {
				e := state(50, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq)
				e.SPort = 40001
				return e
			}(),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 close",
			"300 10.0.0.2:40000>8080 FIN_WAIT1->FIN_WAIT2 close 5ms",
			"300 10.0.0.2:40000>8080 FIN_WAIT2->TIME_WAIT close 5ms timeout=60s",
			"300 10.0.0.2:40001>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40001>8080 SYN_SENT->FIN_WAIT1 connect 1ms",
			"300 10.0.0.2:40001>8080 FIN_WAIT1->FIN_WAIT2 connect 3ms",
			"300 10.0.0.2:40000>8080 TIME_WAIT->CLOSE close 10ms killed",
			"300 10.0.0.2:40001>8080 FIN_WAIT2->TIME_WAIT connect 5ms timeout=60s",
		},
	}, {
		name: "a refused connect, and a reset on the server's side still held for its accept, keep their errors",
		events: append(handshake(),
			state(20, atClient, clientSock+1, tracer.StateClose, tracer.StateSynSent, client),
			withErr(state(21, atClient, clientSock+1, tracer.StateSynSent, tracer.StateClose, softirq), econnrefused),
			withErr(state(30, atServer, serverSock, tracer.StateEstablished, tracer.StateClose, softirq), econnreset),
		),
		want: []string{
			"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 2ms",
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->CLOSE connect 1ms ECONNREFUSED",
			"100 10.0.0.1:8080>40000 LISTEN->SYN_RECV listener",
			"100 10.0.0.1:8080>40000 SYN_RECV->ESTABLISHED listener 1ms",
			"100 10.0.0.1:8080>40000 ESTABLISHED->CLOSE listener 18ms ECONNRESET",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := correlate(t, tc.events)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got:\n  %s\nwant:\n  %s", join(got), join(tc.want))
			}
		})
	}
}

// mapped turns an event into what a dual-stack IPv6 socket reports of an
// IPv4 connection.
func mapped(e tracer.Event) tracer.Event {
	e.Family = tracer.FamilyIPv6
	e.SAddr = netip.AddrFrom16(e.SAddr.As16())
	e.DAddr = netip.AddrFrom16(e.DAddr.As16())
	return e
}

// otherClientPort moves a client-side event to another connection's
// client port.
func otherClientPort(e tracer.Event) tracer.Event {
	e.SPort = 40001
	return e
}

// timewait builds an event of the client's timewait socket with its timer
// due in dueMs.
func timewait(ms int64, kind tracer.Kind, substate tracer.State, dueMs int64) tracer.Event {
	e := ev(ms, kind, atClient, twSock, 0, substate, softirq)
	e.TimeoutNs = dueMs * 1e6
	return e
}

// wantLines checks the lines a correlator emitted against those expected.
func wantLines(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("got:\n  %s\nwant:\n  %s", join(got), join(want))
	}
}

func join(lines []string) string {
	s := ""
	for i, l := range lines {
		if i > 0 {
			s += "\n  "
		}
		s += l
	}
	return s
}

// TestCorrelatorCountsTheStepIntoTimeWaitItMissed: a connection seen going
// from FIN_WAIT1 straight into TIME_WAIT missed its FIN_WAIT2 (or CLOSING),
// which the kernel never skips: the summary counts the gap, and no duration
// spans it.
func TestCorrelatorCountsTheStepIntoTimeWaitItMissed(t *testing.T) {
	var out []string
	c := NewCorrelator(func(r *tracer.Record) { out = append(out, line(r)) })
	feed(t, c, []tracer.Event{
		state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
		state(12, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq),
		state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
		// FIN_WAIT1 -> FIN_WAIT2 was skipped.
		timewait(30, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000),
		state(30, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
	})
	c.Flush()
	wantLines(t, out, []string{
		"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
		"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 2ms",
		"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 connect 8ms",
		"300 10.0.0.2:40000>8080 FIN_WAIT1->TIME_WAIT connect timeout=60s",
	})
	if gaps := c.Stats().Gaps; gaps != 1 {
		t.Errorf("gaps %d, want 1", gaps)
	}
}

// TestCorrelatorForgetsClosedSockets: memory follows live sockets, so a
// storm of short connections leaves nothing behind.
func TestCorrelatorForgetsClosedSockets(t *testing.T) {
	c := NewCorrelator(func(*tracer.Record) {})
	for i := range 10_000 {
		sock := tracer.SockID(0x10000 + i)
		for _, e := range []tracer.Event{
			state(int64(i), atClient, sock, tracer.StateClose, tracer.StateSynSent, client),
			state(int64(i), atClient, sock, tracer.StateSynSent, tracer.StateEstablished, softirq),
			state(int64(i), atClient, sock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
			state(int64(i), atClient, sock, tracer.StateCloseWait, tracer.StateLastAck, client),
			state(int64(i), atClient, sock, tracer.StateLastAck, tracer.StateClose, softirq),
		} {
			c.Handle(&e)
		}
	}
	if n := c.Live(); n != 0 {
		t.Errorf("%d sockets still tracked after all closed", n)
	}
	if s := c.Stats(); s.Opened != 10_000 || s.Closed != 10_000 {
		t.Errorf("opened %d closed %d, want 10000 each", s.Opened, s.Closed)
	}
}

func TestCorrelatorAllocatesNothingPerEvent(t *testing.T) {
	c := NewCorrelator(func(*tracer.Record) {})
	events := append(handshake(), ev(20, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
		state(30, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		state(31, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker),
		state(32, atServer, serverSock, tracer.StateLastAck, tracer.StateClose, softirq),
		state(30, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
		state(31, atClient, clientSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
		timewait(31, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000),
		state(31, atClient, clientSock, tracer.StateFinWait2, tracer.StateClose, softirq),
		timewait(60_031, tracer.KindTimeWaitExpire, tracer.StateTimeWait, 0),
		state(40, atListener, listenSock, tracer.StateListen, tracer.StateClose, listener),
		// Exits: of a process that owns nothing, and of one whose
		// sockets have all closed.
		tracer.Event{TimeNs: 50e6, Kind: tracer.KindExit, Process: tracer.Process{PID: 4242}},
		tracer.Event{TimeNs: 51e6, Kind: tracer.KindExit, Process: tracer.Process{PID: client, Comm: tracer.CommFrom("p300")}},
	)
	run := func() {
		for i := range events {
			c.Handle(&events[i])
		}
	}
	run() // warm the maps and free lists
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations per connection", n)
	}
	// Every socket has closed: every slot of held lines is free again.
	if len(c.heldLines) == 0 || len(c.heldFree) != len(c.heldLines) {
		t.Errorf("%d of %d slots of held lines free after every socket closed", len(c.heldFree), len(c.heldLines))
	}
}

// seeded is a snapshot of port 8080 with these sockets, held by the
// listener (p100) and the worker (p200), and a correlator started from it
// whose lines got collects.
func seeded(got *[]string, sockets ...snapshot.PortSocket) (*Correlator, *snapshot.PortReport) {
	c := NewCorrelator(func(r *tracer.Record) { *got = append(*got, r.Type.String()+" "+line(r)) })
	r := &snapshot.PortReport{
		Port: 8080, Sockets: sockets,
		Processes: map[uint32]*proc.Process{listener: {Identity: proc.Identity{PID: listener}, Name: "p100"}, worker: {Identity: proc.Identity{PID: worker}, Name: "p200"}},
	}
	return c, r
}

// snapshotListener and snapshotServer are the listener and the server end
// of a connection, as a snapshot finds them.
func snapshotListener(proto tracer.Proto, sock tracer.SockID) snapshot.PortSocket {
	return snapshot.PortSocket{Proto: proto, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: netip.AddrPortFrom(serverAddr, 8080),
		Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), NetNS: 1, Sock: sock, PIDs: []uint32{listener}}
}

func snapshotServer(proto tracer.Proto, sock tracer.SockID) snapshot.PortSocket {
	return snapshot.PortSocket{Proto: proto, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, Local: netip.AddrPortFrom(serverAddr, 8080),
		Remote: netip.AddrPortFrom(clientAddr, 40000), NetNS: 1, Sock: sock, PIDs: []uint32{worker}}
}

// TestCorrelatorSeed: a watch starts from the snapshot's sockets, reports
// them, and attributes their later transitions to the processes holding
// them; a seeded listener's owner stands in for unaccepted connections.
func TestCorrelatorSeed(t *testing.T) {
	var got []string
	c, r := seeded(&got, snapshotListener(tracer.ProtoTCP, listenSock), snapshotServer(tracer.ProtoTCP, serverSock))
	c.Seed(r, 0)
	accepted := state(11, atServer, tracer.SockID(0x5000), tracer.StateListen, tracer.StateSynRecv, softirq)
	accepted.DPort = 40001
	feed(t, c, []tracer.Event{
		state(10, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		accepted,
		tick(1500),
	})
	wantLines(t, got, []string{
		"socket 100 10.0.0.1:8080>0 UNKNOWN->LISTEN snapshot",
		"socket 200 10.0.0.1:8080>40000 UNKNOWN->ESTABLISHED snapshot",
		"state 200 10.0.0.1:8080>40000 ESTABLISHED->CLOSE_WAIT snapshot",
		"state 100 10.0.0.1:8080>40001 LISTEN->SYN_RECV listener",
	})
}

// TestCorrelatorSeedAfterOlderEvents: a snapshot is taken after the events
// older than it, which a watch reads only once it has taken the snapshot.
// Here a connection ends and its sockets' memory goes to the next one, from
// the server's end to the client's, before the snapshot is complete: the
// old connection's lines keep its own ends and roles (the snapshot, taken
// first, once gave the old server's lines the new client's role), and the
// new connection, seen opening, gets no at-start line.
func TestCorrelatorSeedAfterOlderEvents(t *testing.T) {
	var got []string
	c := NewCorrelator(func(r *tracer.Record) {
		got = append(got, fmt.Sprintf("%s %s %s", r.Type, line(r), [...]string{"unknown", "client", "server"}[r.Role]))
	})
	const nextClient, nextServer = serverSock, clientSock // the memory, swapped
	newClient := snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished,
		Local: netip.AddrPortFrom(clientAddr, 40001), Remote: netip.AddrPortFrom(serverAddr, 8080), NetNS: 1,
		Sock: nextClient, PIDs: []uint32{client}, Role: tracer.RoleClient}
	newServer := snapshotServer(tracer.ProtoTCP, nextServer)
	newServer.Remote, newServer.Role = newClient.Local, tracer.RoleServer
	listening := snapshotListener(tracer.ProtoTCP, listenSock)
	r := &snapshot.PortReport{Port: 8080, Sockets: []snapshot.PortSocket{listening, newClient, newServer},
		Processes: map[uint32]*proc.Process{listener: {Identity: proc.Identity{PID: listener}, Name: "p100"},
			worker: {Identity: proc.Identity{PID: worker}, Name: "p200"}, client: {Identity: proc.Identity{PID: client}, Name: "p300"}}}
	c.Seed(r, 100e6)
	next := func(e tracer.Event) tracer.Event { return fromClientPort(e, 40001) }
	// The old connection, older than the trace, ends; the next one
	// opens while the snapshot is taken.
	feed(t, c, append(serverCloses(50, serverSock, 40000),
		next(state(60, atClient, nextClient, tracer.StateClose, tracer.StateSynSent, client)),
		next(state(61, atServer, nextServer, tracer.StateListen, tracer.StateSynRecv, softirq)),
		next(state(61, atServer, nextServer, tracer.StateSynRecv, tracer.StateEstablished, softirq)),
		next(state(61, atClient, nextClient, tracer.StateSynSent, tracer.StateEstablished, softirq)),
		next(ev(62, tracer.KindAccept, atServer, nextServer, 0, tracer.StateEstablished, worker)),
		// After the snapshot.
		next(state(150, atClient, nextClient, tracer.StateEstablished, tracer.StateFinWait1, client)),
	))
	// In the order the correlator puts them out (a watch's window puts
	// them in time order): the lines held for the snapshot come out as a
	// socket closes or when the snapshot is taken.
	wantLines(t, got, []string{
		"state 200 10.0.0.1:8080>40000 ESTABLISHED->CLOSE_WAIT close server",
		"state 200 10.0.0.1:8080>40000 CLOSE_WAIT->LAST_ACK close 1ms server",
		"state 200 10.0.0.1:8080>40000 LAST_ACK->CLOSE close 1ms server",
		"state 200 10.0.0.1:8080>40001 LISTEN->SYN_RECV accept server",
		"state 200 10.0.0.1:8080>40001 SYN_RECV->ESTABLISHED accept 0ms server",
		"socket 100 10.0.0.1:8080>0 UNKNOWN->LISTEN snapshot unknown",
		"state 300 10.0.0.2:40001>8080 CLOSE->SYN_SENT connect client",
		"state 300 10.0.0.2:40001>8080 SYN_SENT->ESTABLISHED connect 1ms client",
		"state 300 10.0.0.2:40001>8080 ESTABLISHED->FIN_WAIT1 connect 89ms client",
	})
}

// fromClientPort is e, an event of either end of the synthetic
// connection, for a connection from the client's port instead.
func fromClientPort(e tracer.Event, port uint16) tracer.Event {
	if e.SPort == 8080 {
		e.DPort = port
	} else {
		e.SPort = port
	}
	return e
}

// serverCloses is the passive close of the server's end sock, connected
// from the client's port, from ms on.
func serverCloses(ms int64, sock tracer.SockID, port uint16) []tracer.Event {
	events := []tracer.Event{
		state(ms, atServer, sock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		state(ms+1, atServer, sock, tracer.StateCloseWait, tracer.StateLastAck, worker),
		state(ms+2, atServer, sock, tracer.StateLastAck, tracer.StateClose, softirq),
	}
	for i := range events {
		events[i].DPort = port
	}
	return events
}

// TestCorrelatorSeedSkipsSocketsGoneMeanwhile: a socket the snapshot shows,
// but whose end the events before it was complete told, is not brought
// back as found at the start: not by its id, nor, where the snapshot had
// none (its holder had closed it before the walk of the files), by its
// ends.
func TestCorrelatorSeedSkipsSocketsGoneMeanwhile(t *testing.T) {
	var got []string
	unheld := snapshotServer(tracer.ProtoTCP, 0)
	unheld.Remote, unheld.PIDs = netip.AddrPortFrom(clientAddr, 40001), nil
	c, r := seeded(&got, snapshotServer(tracer.ProtoTCP, serverSock), unheld)
	c.Seed(r, 100e6)
	feed(t, c, append(append(serverCloses(50, serverSock, 40000), serverCloses(53, twSock, 40001)...), tick(200)))
	for _, l := range got {
		if strings.HasPrefix(l, "socket") {
			t.Errorf("an at-start line for a socket gone before the snapshot was complete: %s", l)
		}
	}
	if c.Live() != 0 {
		t.Errorf("%d sockets live, want none", c.Live())
	}
}

// TestCorrelatorSeedTimeWaitAtTheStart: a timewait socket the snapshot
// shows (without an id) is found at the start, even where the events saw
// the full socket before it close unseen into it; but not where a socket
// the events follow holds its ends now, or held them and ended without a
// timewait socket (a new connection's SYN killed the one the snapshot saw).
func TestCorrelatorSeedTimeWaitAtTheStart(t *testing.T) {
	var got []string
	atEnds := func(port uint16) snapshot.PortSocket {
		return snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait,
			Local: netip.AddrPortFrom(serverAddr, 8080), Remote: netip.AddrPortFrom(clientAddr, port), NetNS: 1,
			Timer: snapshot.TimerTimeWait, TimerNs: 59e9}
	}
	c, r := seeded(&got, atEnds(40000), atEnds(40001), atEnds(40002))
	c.Seed(r, 100e6)
	const next, another = tracer.SockID(0x5000), tracer.SockID(0x6000)
	feed(t, c, append([]tracer.Event{
		// The full socket at the first ends closes; its timewait
		// socket is not seen (the timer probes were still attaching).
		state(50, atServer, serverSock, tracer.StateFinWait2, tracer.StateClose, softirq),
		// A new connection at the second ends.
		fromClientPort(state(60, atServer, next, tracer.StateListen, tracer.StateSynRecv, softirq), 40001),
		// And one at the third, which the client closes first: no
		// timewait socket of this end.
		fromClientPort(state(61, atServer, another, tracer.StateListen, tracer.StateSynRecv, softirq), 40002),
		fromClientPort(state(61, atServer, another, tracer.StateSynRecv, tracer.StateEstablished, softirq), 40002),
	}, append(serverCloses(70, another, 40002), tick(2000))...))
	var atStart []string
	for _, l := range got {
		if strings.HasPrefix(l, "socket") {
			atStart = append(atStart, l)
		}
	}
	wantLines(t, atStart, []string{"socket 0 10.0.0.1:8080>40000 UNKNOWN->TIME_WAIT unknown timeout=59s"})
}

// TestCorrelatorSeedNamesOwnersOfLinesHeldForIt: the lines of an older
// socket that acts before the snapshot is complete wait for it, and carry
// the holder it names.
func TestCorrelatorSeedNamesOwnersOfLinesHeldForIt(t *testing.T) {
	var got []string
	c, r := seeded(&got, snapshotListener(tracer.ProtoTCP, listenSock), snapshotServer(tracer.ProtoTCP, serverSock))
	r.Sockets[1].State = tracer.StateCloseWait
	c.Seed(r, 100e6)
	feed(t, c, []tracer.Event{
		state(50, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		tick(200),
	})
	wantLines(t, got, []string{
		"socket 100 10.0.0.1:8080>0 UNKNOWN->LISTEN snapshot",
		"state 200 10.0.0.1:8080>40000 ESTABLISHED->CLOSE_WAIT snapshot",
	})
}

// TestCorrelatorSeedTimeLeftOnlyForTimeWait: an at-start line gives the
// time left to a timewait socket, never another timer's (an established
// connection's keepalive read "14.8s left", as if it would end then).
func TestCorrelatorSeedTimeLeftOnlyForTimeWait(t *testing.T) {
	var got []string
	kept := snapshotServer(tracer.ProtoTCP, serverSock)
	kept.Timer, kept.TimerNs = "keepalive", 14_800_000_000
	timewait := snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait,
		Local: netip.AddrPortFrom(serverAddr, 8080), Remote: netip.AddrPortFrom(clientAddr, 40001), NetNS: 1,
		Timer: snapshot.TimerTimeWait, TimerNs: 42_000_000_000}
	c, r := seeded(&got, kept, timewait)
	c.Seed(r, 0)
	c.Tick(1)
	wantLines(t, got, []string{
		"socket 200 10.0.0.1:8080>40000 UNKNOWN->ESTABLISHED snapshot",
		"socket 0 10.0.0.1:8080>40001 UNKNOWN->TIME_WAIT unknown timeout=42s",
	})
}

// TestCorrelatorSeedKnowsHoldersByExactStart: a snapshot's holders carry
// /proc's start time, cut to a clock tick, and the kernel's exact one,
// which the events name them by: a seeded socket closed by its own holder
// is not taken for one changing hands (the watch once printed an OWNER line
// "from python3 via close" for python3 closing its own socket).
func TestCorrelatorSeedKnowsHoldersByExactStart(t *testing.T) {
	const exact, cut = 5_004_567_891, 5_000_000_000
	var got []string
	c, r := seeded(&got, snapshotServer(tracer.ProtoTCP, serverSock))
	r.Processes[worker].StartNs, r.StartNs = cut, map[uint32]uint64{worker: exact}
	c.Seed(r, 0)
	closed := state(10, atServer, serverSock, tracer.StateEstablished, tracer.StateFinWait1, worker)
	closed.Process.StartNs = exact
	feed(t, c, []tracer.Event{closed, tick(1500)})
	wantLines(t, got, []string{
		"socket 200 10.0.0.1:8080>40000 UNKNOWN->ESTABLISHED snapshot",
		"state 200 10.0.0.1:8080>40000 ESTABLISHED->FIN_WAIT1 snapshot",
	})
}

// TestCorrelatorSeedMPTCP: an MPTCP socket a snapshot found (a Go
// listener, a Go connection) is followed through its first TCP subflow,
// which its state events name: they are its holder's, and the published
// index names the MPTCP socket, as for the subflows traced live. A second
// subflow of the connection takes the connection's owner.
func TestCorrelatorSeedMPTCP(t *testing.T) {
	const (
		msk, subflow         = tracer.SockID(0x7000), tracer.SockID(0x7100)
		connMsk, connSubflow = tracer.SockID(0x7200), tracer.SockID(0x7300)
		secondSubflow        = tracer.SockID(0x7400)
	)
	var got []string
	listening, serving := snapshotListener(tracer.ProtoMPTCP, msk), snapshotServer(tracer.ProtoMPTCP, connMsk)
	listening.Subflow, serving.Subflow = subflow, connSubflow
	c, r := seeded(&got, listening, serving)
	c.Seed(r, 0)
	c.Tick(1)
	owned := ownedOf(c)
	if len(owned) != 2 || owned[0].Sock != msk || owned[0].Proto != tracer.ProtoMPTCP || owned[1].Sock != connMsk {
		t.Errorf("published %+v, want the two MPTCP sockets", owned)
	}
	second := state(11, atServer, secondSubflow, tracer.StateSynRecv, tracer.StateEstablished, softirq)
	second.Parent = connMsk
	feed(t, c, []tracer.Event{
		state(10, atServer, connSubflow, tracer.StateEstablished, tracer.StateCloseWait, softirq),
		second,
		state(12, atListener, subflow, tracer.StateListen, tracer.StateClose, listener),
		tick(1500),
	})
	wantLines(t, got, []string{
		"socket 100 10.0.0.1:8080>0 UNKNOWN->LISTEN snapshot",
		"socket 200 10.0.0.1:8080>40000 UNKNOWN->ESTABLISHED snapshot",
		"state 200 10.0.0.1:8080>40000 ESTABLISHED->CLOSE_WAIT snapshot",
		"state 200 10.0.0.1:8080>40000 SYN_RECV->ESTABLISHED mptcp",
		"state 100 10.0.0.1:8080>0 LISTEN->CLOSE snapshot",
	})
}

// heldByTimeWait is a passive connection whose accept and ESTABLISHED ->
// FIN_WAIT1 were lost, so that the server's lines are still held (nobody
// known to own them) when its timewait socket takes over the connection.
func heldByTimeWait() []tracer.Event {
	twStart := ev(21, tracer.KindTimeWaitStart, atServer, twSock, 0, tracer.StateTimeWait, softirq)
	twStart.TimeoutNs = 60e9
	return append(handshake(),
		state(20, atServer, serverSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
		twStart,
		state(21, atServer, serverSock, tracer.StateFinWait2, tracer.StateClose, softirq),
	)
}

// feed runs events through c without the final Flush that would hide
// lines a Tick failed to release.
func feed(t *testing.T, c *Correlator, events []tracer.Event) {
	t.Helper()
	for i := range events {
		if events[i].Kind == 0 {
			c.Tick(events[i].TimeNs)
		} else {
			c.Handle(&events[i])
		}
		checkPending(t, c)
	}
}

// TestCorrelatorTimeWaitInheritsHoldDeadline: lines a timewait socket
// inherits from the full socket are released one hold timeout after they
// were first held, not when the timewait socket ends 60 s later.
func TestCorrelatorTimeWaitInheritsHoldDeadline(t *testing.T) {
	var got []string
	c := NewCorrelator(func(r *tracer.Record) { got = append(got, line(r)) })
	feed(t, c, append(heldByTimeWait(), tick(1011)))
	want := []string{
		"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
		"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
		"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 2ms",
		"100 10.0.0.1:8080>40000 LISTEN->SYN_RECV listener",
		"100 10.0.0.1:8080>40000 SYN_RECV->ESTABLISHED listener 1ms",
		"100 10.0.0.1:8080>40000 FIN_WAIT1->FIN_WAIT2 listener",
		"100 10.0.0.1:8080>40000 FIN_WAIT2->TIME_WAIT listener 1ms timeout=60s",
	}
	if !slices.Equal(got, want) {
		t.Errorf("by 1 s after the first held line:\n got  %s\n want %s", join(got), join(want))
	}
}

// TestCorrelatorKilledAfterInheritedHold: a timewait socket whose timer was
// stopped while it still held inherited lines is settled as killed once the
// stop's grace passes, after the hold has been released.
func TestCorrelatorKilledAfterInheritedHold(t *testing.T) {
	var got []string
	c := NewCorrelator(func(r *tracer.Record) { got = append(got, line(r)) })
	cancel := ev(1000, tracer.KindTimeWaitCancel, atServer, twSock, 0, tracer.StateTimeWait, softirq)
	cancel.TimeoutNs = 59_021e6
	feed(t, c, append(heldByTimeWait(), cancel, tick(1011), tick(1101)))
	wantLast := "100 10.0.0.1:8080>40000 TIME_WAIT->CLOSE listener 979ms killed"
	if len(got) == 0 || got[len(got)-1] != wantLast {
		t.Errorf("last line:\n got  %s\n want %s", join(got), wantLast)
	}
	if _, ok := c.byID[twSock]; ok {
		t.Error("the killed timewait socket is still tracked")
	}
}

// TestDeadlineQueueOrder: whatever order deadlines are set, moved and
// dropped in, Tick settles sockets in deadline order and leaves none behind.
func TestDeadlineQueueOrder(t *testing.T) {
	c := NewCorrelator(func(*tracer.Record) {})
	const n = 200
	for k := range n {
		e := state(int64(k), atClient, tracer.SockID(0x10000+k), tracer.StateClose, tracer.StateSynSent, client)
		e.SPort = 0 // a connect whose local port is not known yet: held
		c.Handle(&e)
	}
	// Scramble: re-hold every third socket later by releasing and holding again.
	for k := 0; k < n; k += 3 {
		i := c.byID[tracer.SockID(0x10000+k)]
		c.release(i)
		c.line(i, heldLine{timeNs: int64(k+n) * 1e6, old: tracer.StateClose, new: tracer.StateSynSent, typ: tracer.RecordState})
	}
	// Each tick names the next deadline, the queue's earliest: following
	// them empties the queue in order.
	last := int64(-1)
	for d := c.Tick(0); d != tracer.NoDeadline; d = c.Tick(d) {
		checkPending(t, c)
		if i, _ := c.queue.first(); c.socks.at(i).places[byDeadline].key != d {
			t.Fatalf("Tick named deadline %d, the queue's earliest is %d", d, c.socks.at(i).places[byDeadline].key)
		}
		if d < last {
			t.Fatalf("deadline %d came after %d", d, last)
		}
		last = d
	}
	if len(c.queue.socks) != 0 || len(c.pending.socks) != 0 {
		t.Fatalf("%d sockets still queued, %d pending, after the last deadline", len(c.queue.socks), len(c.pending.socks))
	}
	if since, ok := c.PendingSinceNs(); ok {
		t.Fatalf("a line pending since %d after the last deadline", since)
	}
	for i := range c.socks.len() {
		if p := c.socks.at(i).places; p[byDeadline].pos != 0 || p[byPending].pos != 0 {
			t.Fatalf("socket %d still has a queue position after the queues emptied", i)
		}
	}
}

// checkPending compares PendingSinceNs with the oldest pending line of
// every socket, looked for one by one.
func checkPending(t *testing.T, c *Correlator) {
	t.Helper()
	var want int64
	wantOK := false
	for i := range c.socks.len() {
		if p, ok := c.socks.at(i).pendingSince(); ok && (!wantOK || p < want) {
			want, wantOK = p, true
		}
	}
	if got, ok := c.PendingSinceNs(); got != want || ok != wantOK {
		t.Fatalf("PendingSinceNs = %d, %v; the sockets' oldest is %d, %v", got, ok, want, wantOK)
	}
}

// TestCorrelatorCgroupsAndKernelThreads: a line names its owner's cgroup,
// or, while no owner is known, the socket's own (the task on the CPU in a
// softirq is a bystander); a kernel thread acting on a socket (a kworker
// closing it) never becomes its owner.
func TestCorrelatorCgroupsAndKernelThreads(t *testing.T) {
	var got []string
	c := NewCorrelator(func(r *tracer.Record) {
		got = append(got, fmt.Sprintf("%d %s %s cgroup %d", r.PID, r.Comm, r.OwnerVia, r.CgroupID))
	})
	const rootCgroup, serverCgroup, clientCgroup = 1, 500, 600
	closeWait := state(10, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq)
	closeWait.CgroupID, closeWait.SockCgroupID = rootCgroup, serverCgroup
	kworker := state(20, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, 9)
	kworker.KernelThread, kworker.CgroupID, kworker.SockCgroupID = true, rootCgroup, serverCgroup
	connect := state(30, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client)
	connect.CgroupID, connect.SockCgroupID = clientCgroup, clientCgroup
	established := state(31, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq)
	established.CgroupID, established.SockCgroupID = rootCgroup, clientCgroup
	feed(t, c, []tracer.Event{closeWait, kworker, connect, established})
	want := []string{
		"0  unknown cgroup 500",
		"0  unknown cgroup 500",
		"300 p300 connect cgroup 600",
		"300 p300 connect cgroup 600",
	}
	wantLines(t, got, want)
}

// TestCorrelatorMPTCPSubflows: an MPTCP connection's subflows are TCP
// sockets owned by whoever owns the connection: the first by the accept or
// connect that named it, the ones the kernel joins later (born from the
// listener, or opened by a kworker) by inheritance; a kworker closing a
// subflow never takes it over.
func TestCorrelatorMPTCPSubflows(t *testing.T) {
	const (
		listenMsk  tracer.SockID = 0x9000 // the MPTCP sockets
		serverMsk  tracer.SockID = 0x9100
		clientMsk  tracer.SockID = 0x9200
		joinSock   tracer.SockID = 0x2100 // the subflows the kernel adds
		joinClient tracer.SockID = 0x3100
		kworker                  = 9
	)
	sub := func(e tracer.Event, parent tracer.SockID) tracer.Event { e.Parent = parent; return e }
	joined := func(e tracer.Event) tracer.Event { return fromClientPort(e, 40001) }
	kthread := func(e tracer.Event) tracer.Event { e.KernelThread = true; return e }
	got := correlate(t, []tracer.Event{
		sub(state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener), listenMsk),
		sub(state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client), clientMsk),
		// A passive subflow names the listener's MPTCP socket until its
		// connection has one of its own.
		sub(state(11, atServer, serverSock, tracer.StateListen, tracer.StateSynRecv, softirq), listenMsk),
		sub(state(12, atServer, serverSock, tracer.StateSynRecv, tracer.StateEstablished, softirq), serverMsk),
		sub(ev(13, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker), serverMsk),
		joined(kthread(sub(state(20, atClient, joinClient, tracer.StateClose, tracer.StateSynSent, kworker), clientMsk))),
		joined(sub(state(21, atServer, joinSock, tracer.StateListen, tracer.StateSynRecv, softirq), listenMsk)),
		joined(sub(state(22, atServer, joinSock, tracer.StateSynRecv, tracer.StateEstablished, softirq), serverMsk)),
		kthread(sub(state(30, atServer, serverSock, tracer.StateEstablished, tracer.StateFinWait1, kworker), serverMsk)),
	})
	want := []string{
		"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
		"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
		"200 10.0.0.1:8080>40000 LISTEN->SYN_RECV accept",
		"200 10.0.0.1:8080>40000 SYN_RECV->ESTABLISHED accept 1ms",
		"300 10.0.0.2:40001>8080 CLOSE->SYN_SENT mptcp",
		"200 10.0.0.1:8080>40001 LISTEN->SYN_RECV mptcp",
		"200 10.0.0.1:8080>40001 SYN_RECV->ESTABLISHED mptcp 1ms",
		"200 10.0.0.1:8080>40000 ESTABLISHED->FIN_WAIT1 accept 18ms",
	}
	wantLines(t, got, want)
}

// TestCorrelatorNamesTheThreadThatActs: a connection accepted by one named
// thread and closed by another names each on its lines; a softirq's
// bystander names none.
func TestCorrelatorNamesTheThreadThatActs(t *testing.T) {
	var got []string
	c := NewCorrelator(func(r *tracer.Record) { got = append(got, fmt.Sprintf("%s->%s %s/%s", r.Old, r.New, r.Comm, r.Thread)) })
	named := func(e tracer.Event, thread string) tracer.Event {
		e.Comm, e.Thread = tracer.CommFrom("java"), tracer.CommFrom(thread)
		return e
	}
	feed(t, c, []tracer.Event{
		named(state(1, atServer, serverSock, tracer.StateListen, tracer.StateSynRecv, softirq), "ksoftirqd/0"),
		named(ev(2, tracer.KindAccept, atServer, serverSock, 0, tracer.StateSynRecv, worker), "http-nio-8080-A"),
		named(state(3, atServer, serverSock, tracer.StateSynRecv, tracer.StateEstablished, softirq), "curl"),
		named(state(4, atServer, serverSock, tracer.StateEstablished, tracer.StateFinWait1, worker), "http-nio-8080-e"),
	})
	want := []string{
		"LISTEN->SYN_RECV java/http-nio-8080-A",
		"SYN_RECV->ESTABLISHED java/http-nio-8080-A",
		"ESTABLISHED->FIN_WAIT1 java/http-nio-8080-e",
	}
	wantLines(t, got, want)
}

// TestIndexNamesWhatProcessesHold: the published owners say what each
// process holds, as a snapshot would: a listener's inode, which tells
// SO_REUSEPORT listeners with the same ends apart; MPTCP for an MPTCP
// listener and connection; TCP for an MPTCP listener's connection from a
// client without MPTCP, which accept returns as a plain TCP socket.
func TestIndexNamesWhatProcessesHold(t *testing.T) {
	const (
		listenMsk   tracer.SockID = 0x9000
		serverMsk   tracer.SockID = 0x9100
		fallback    tracer.SockID = 0x1200
		otherListen tracer.SockID = 0x1300
	)
	sub := func(e tracer.Event, parent tracer.SockID) tracer.Event { e.Parent = parent; return e }
	withInode := func(e tracer.Event, inode uint64) tracer.Event { e.Inode = inode; return e }
	from := func(e tracer.Event, port uint16) tracer.Event { e.DPort = port; return e }
	c := NewCorrelator(func(*tracer.Record) {})
	feed(t, c, []tracer.Event{
		withInode(sub(state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener), listenMsk), 501),
		withInode(state(1, atListener, otherListen, tracer.StateClose, tracer.StateListen, worker), 502),
		sub(state(11, atServer, serverSock, tracer.StateListen, tracer.StateSynRecv, softirq), listenMsk),
		sub(state(12, atServer, serverSock, tracer.StateSynRecv, tracer.StateEstablished, softirq), serverMsk),
		sub(ev(13, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker), serverMsk),
		from(sub(state(21, atServer, fallback, tracer.StateListen, tracer.StateSynRecv, softirq), listenMsk), 40002),
		from(state(22, atServer, fallback, tracer.StateSynRecv, tracer.StateEstablished, softirq), 40002),
		from(ev(23, tracer.KindAccept, atServer, fallback, 0, tracer.StateEstablished, worker), 40002),
	})
	type held struct {
		proto tracer.Proto
		inode uint64
		pid   uint32
	}
	got := map[tracer.State]map[uint16]held{}
	for _, o := range ownedOf(c) {
		if got[o.State] == nil {
			got[o.State] = map[uint16]held{}
		}
		key := o.Remote.Port()
		if o.State == tracer.StateListen {
			key = uint16(o.Inode)
		}
		got[o.State][key] = held{o.Proto, o.Inode, o.Process.PID}
	}
	want := map[tracer.State]map[uint16]held{
		tracer.StateListen:      {501: {tracer.ProtoMPTCP, 501, listener}, 502: {tracer.ProtoTCP, 502, worker}},
		tracer.StateEstablished: {40000: {tracer.ProtoMPTCP, 0, worker}, 40002: {tracer.ProtoTCP, 0, worker}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("owned:\n %v\nwant\n %v", got, want)
	}
}

// ownedOf is what the index publishes of the sockets whose owner c knows.
func ownedOf(c *Correlator) []Owned {
	owned, _ := c.appendIndexed(nil, nil)
	return owned
}

// TestCorrelatorFollowsTimeWaitFoundAtTheStart: a timewait socket the
// snapshot found, which has no kernel address there, is in the index from
// the start (no owner: counted apart), dated from its timer (its lines
// give no duration: the watch did not see it start); its expiry,
// named by the kernel's address and its ends, ends it with a line, as a
// kill settles another. A timer event of other ends leaves it be.
func TestCorrelatorFollowsTimeWaitFoundAtTheStart(t *testing.T) {
	var got []string
	atClientPort := func(port uint16, timerMs int64) snapshot.PortSocket {
		return snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait,
			Local: netip.AddrPortFrom(clientAddr, port), Remote: netip.AddrPortFrom(serverAddr, 8080), NetNS: 1,
			Timer: snapshot.TimerTimeWait, TimerNs: timerMs * 1e6}
	}
	c, r := seeded(&got, atClientPort(40000, 20_000), atClientPort(40001, 30_000))
	c.Seed(r, 100e6)
	c.Tick(101e6)
	_, unowned := c.appendIndexed(nil, nil)
	if len(unowned) != 2 || !unowned[0].TimeWait || unowned[0].State != tracer.StateTimeWait {
		t.Fatalf("index: %+v, want both timewait sockets, unowned", unowned)
	}
	for _, o := range unowned {
		if since := map[uint16]int64{40000: 100e6 + 20e9 - 60e9, 40001: 100e6 + 30e9 - 60e9}[o.Local.Port()]; o.SinceNs != since {
			t.Errorf("%s: in TIME_WAIT since %d, want %d (its timer's expiry, 60 s before)", o.Local, o.SinceNs, since)
		}
	}
	elsewhere := fromClientPort(timewait(19_000, tracer.KindTimeWaitExpire, tracer.StateTimeWait, 0), 40009)
	elsewhere.Sock = 0x7000
	expiry := timewait(20_100, tracer.KindTimeWaitExpire, tracer.StateTimeWait, 0)
	kill := fromClientPort(timewait(25_000, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 35_100), 40001)
	kill.Sock = 0x8000
	feed(t, c, []tracer.Event{elsewhere, expiry, kill, tick(30_000)})
	wantLines(t, got, []string{
		"socket 0 10.0.0.2:40000>8080 UNKNOWN->TIME_WAIT unknown timeout=20s",
		"socket 0 10.0.0.2:40001>8080 UNKNOWN->TIME_WAIT unknown timeout=30s",
		"state 0 10.0.0.2:40000>8080 TIME_WAIT->CLOSE unknown expired",
		"state 0 10.0.0.2:40001>8080 TIME_WAIT->CLOSE unknown killed",
	})
	if owned, unowned := c.appendIndexed(nil, nil); len(owned)+len(unowned) != 0 {
		t.Errorf("index after both ended: %+v %+v", owned, unowned)
	}
}

// TestCorrelatorTimeWaitFoundAtTheStartOnce: a timewait socket found at
// the start is followed once, and leaves the index, however it goes: in
// both snapshots of a watch of every port with --connections (it was
// adopted twice, the second copy never claimed); expired before the
// snapshot was complete (its expiry came first: it stayed for good); at
// an address the events had left to a socket whose end they missed (the
// claim gave up, and it stayed too).
func TestCorrelatorTimeWaitFoundAtTheStartOnce(t *testing.T) {
	timewait := func(port uint16, state tracer.State) snapshot.PortSocket {
		return snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: state,
			Local: netip.AddrPortFrom(clientAddr, port), Remote: netip.AddrPortFrom(serverAddr, 8080), NetNS: 1,
			Timer: snapshot.TimerTimeWait, TimerNs: 20e9}
	}
	expiry := func(ms int64, port uint16, sock tracer.SockID) tracer.Event {
		return fromClientPort(ev(ms, tracer.KindTimeWaitExpire, atClient, sock, 0, tracer.StateTimeWait, softirq), port)
	}
	for _, tc := range []struct {
		name   string
		start  func(c *Correlator, r *snapshot.PortReport)
		events []tracer.Event
	}{
		{"in both snapshots of --connections",
			func(c *Correlator, r *snapshot.PortReport) {
				c.Adopt(r, 100e6)
				c.Seed(r.LocalConnections(), 100e6)
			},
			[]tracer.Event{tick(101), expiry(20_100, 40000, twSock)}},
		{"expired before the snapshot was complete",
			func(c *Correlator, r *snapshot.PortReport) { c.Seed(r, 100e6) },
			[]tracer.Event{expiry(60, 40000, twSock), tick(101)}},
		{"at the address of a socket whose end the events missed",
			func(c *Correlator, r *snapshot.PortReport) { c.Seed(r, 100e6) },
			[]tracer.Event{
				fromClientPort(state(50, atClient, twSock, tracer.StateClose, tracer.StateSynSent, client), 40001),
				tick(101), expiry(20_100, 40000, twSock)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			peer := snapshotServer(tracer.ProtoTCP, serverSock)
			peer.State = tracer.StateCloseWait
			c, r := seeded(&got, timewait(40000, tracer.StateFinWait2), peer)
			tc.start(c, r)
			feed(t, c, append(tc.events, tick(30_000)))
			_, unowned := c.appendIndexed(nil, nil)
			if len(unowned) != 0 || len(c.startTimeWaits) != 0 {
				t.Errorf("still indexed after its end: %+v (waiting for a claim: %v)", unowned, c.startTimeWaits)
			}
		})
	}
}
