package windows

import (
	"net/netip"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
)

type recorder struct{ events []tracer.Event }

func (r *recorder) deliver(ev *tracer.Event) { r.events = append(r.events, *ev) }

func newTestJoiner(cfg tracer.Config) (*tcbJoiner, *recorder) {
	rec := &recorder{}
	return newTCBJoiner(&cfg, rec.deliver), rec
}

// change is a TcpTcbStateChange as decodeTCPIP and the source make it.
func change(sock tracer.SockID, oldState, newState tracer.State, timeNs int64) *tracer.Event {
	return &tracer.Event{Kind: tracer.KindState, Proto: tracer.ProtoTCP, Sock: sock,
		OldState: oldState, NewState: newState, TimeNs: timeNs, Process: tracer.Process{PID: 4}}
}

// named is an event naming sock's endpoints: local 10.0.0.1:lport, remote
// 10.0.0.2:50000.
func named(kind tracer.Kind, sock tracer.SockID, lport uint16) *tracer.Event {
	return &tracer.Event{Kind: kind, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, Sock: sock, Process: tracer.Process{PID: 99},
		SAddr: netip.MustParseAddr("10.0.0.1"), SPort: lport,
		DAddr: netip.MustParseAddr("10.0.0.2"), DPort: 50000}
}

type step struct {
	kind     tracer.Kind
	old, new tracer.State
	sport    uint16
}

func checkDelivered(t *testing.T, got []tracer.Event, want []step) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("delivered %d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.kind || g.OldState != w.old || g.NewState != w.new || g.SPort != w.sport {
			t.Errorf("event %d: got %v %v->%v sport %d, want %v %v->%v sport %d",
				i, g.Kind, g.OldState, g.NewState, g.SPort, w.kind, w.old, w.new, w.sport)
		}
		if w.sport != 0 && (g.DPort != 50000 || g.Family != tracer.FamilyIPv4) {
			t.Errorf("event %d: endpoints not filled: %+v", i, g)
		}
	}
}

func TestJoinerActiveOpen(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{Ports: tracer.Ports{8080}})
	j.push(change(1, tracer.StateClose, tracer.StateSynSent, 1))
	j.push(change(1, tracer.StateSynSent, tracer.StateEstablished, 2))
	if len(rec.events) != 0 {
		t.Fatalf("delivered before the endpoints were known: %+v", rec.events)
	}
	j.push(named(tracer.KindConnect, 1, 8080))
	j.push(change(1, tracer.StateEstablished, tracer.StateFinWait1, 3))
	j.push(named(kindEndpoints, 1, 8080)) // a close request: not delivered
	j.push(change(1, tracer.StateFinWait1, tracer.StateClose, 4))
	checkDelivered(t, rec.events, []step{
		{tracer.KindState, tracer.StateClose, tracer.StateSynSent, 8080},
		{tracer.KindState, tracer.StateSynSent, tracer.StateEstablished, 8080},
		{tracer.KindConnect, 0, 0, 8080},
		{tracer.KindState, tracer.StateEstablished, tracer.StateFinWait1, 8080},
		{tracer.KindState, tracer.StateFinWait1, tracer.StateClose, 8080},
	})
	if len(j.tcbs) != 0 || len(j.pending) != 0 {
		t.Errorf("closed Tcb still remembered: %v, %d pending", j.tcbs, len(j.pending))
	}
}

func TestJoinerPortFilter(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{Ports: tracer.Ports{8080}})
	j.push(change(1, tracer.StateClose, tracer.StateSynRecv, 1))
	j.push(change(2, tracer.StateClose, tracer.StateSynRecv, 1))
	j.push(named(tracer.KindAccept, 1, 9090))
	j.push(named(tracer.KindAccept, 2, 8080))
	checkDelivered(t, rec.events, []step{
		{tracer.KindState, tracer.StateClose, tracer.StateSynRecv, 8080},
		{tracer.KindAccept, 0, 0, 8080},
	})
}

func TestJoinerRemotePortMatches(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{Ports: tracer.Ports{50000}})
	j.push(named(tracer.KindConnect, 1, 1234))
	checkDelivered(t, rec.events, []step{{tracer.KindConnect, 0, 0, 1234}})
}

func TestJoinerFamilyFilter(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{Family: tracer.FamilyIPv6})
	j.push(named(tracer.KindConnect, 1, 8080))
	j.push(change(1, tracer.StateEstablished, tracer.StateFinWait1, 1))
	checkDelivered(t, rec.events, nil)
}

func TestJoinerRequestConnectNamesFirstChange(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{Ports: tracer.Ports{8080}})
	request := named(kindEndpoints, 1, 8080) // 1002 TcpRequestConnect
	request.NewState = tracer.StateClose
	j.push(request)
	j.push(change(1, tracer.StateClose, tracer.StateSynSent, 1))
	checkDelivered(t, rec.events, []step{{tracer.KindState, tracer.StateClose, tracer.StateSynSent, 8080}})
}

func TestJoinerRundown(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{Ports: tracer.Ports{8080}})
	rundown := named(kindEndpoints, 1, 8080)
	rundown.NewState = tracer.StateEstablished
	j.push(rundown)
	j.push(change(1, tracer.StateEstablished, tracer.StateCloseWait, 1))
	checkDelivered(t, rec.events, []step{{tracer.KindState, tracer.StateEstablished, tracer.StateCloseWait, 8080}})
}

func TestJoinerReusedTcb(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{})
	j.push(named(tracer.KindConnect, 1, 8080))
	j.push(change(1, tracer.StateFinWait2, tracer.StateTimeWait, 1))
	// The Tcb's address comes back for another connection, and TIME_WAIT
	// never reported its end.
	j.push(change(1, tracer.StateClose, tracer.StateSynRecv, 2))
	j.push(named(tracer.KindAccept, 1, 9090))
	checkDelivered(t, rec.events, []step{
		{tracer.KindConnect, 0, 0, 8080},
		{tracer.KindState, tracer.StateFinWait2, tracer.StateTimeWait, 8080},
		{tracer.KindState, tracer.StateClose, tracer.StateSynRecv, 9090},
		{tracer.KindAccept, 0, 0, 9090},
	})
}

func TestJoinerLateCloseEventDoesNotNameNextLife(t *testing.T) {
	j, rec := newTestJoiner(tracer.Config{})
	j.push(named(tracer.KindConnect, 1, 8080))
	j.push(change(1, tracer.StateLastAck, tracer.StateClose, 1))
	j.push(named(kindEndpoints, 1, 8080)) // 1043 TcpDisconnectTcbComplete, after the end
	j.push(change(1, tracer.StateClose, tracer.StateSynRecv, 2))
	j.push(named(tracer.KindAccept, 1, 9090))
	checkDelivered(t, rec.events, []step{
		{tracer.KindConnect, 0, 0, 8080},
		{tracer.KindState, tracer.StateLastAck, tracer.StateClose, 8080},
		{tracer.KindState, tracer.StateClose, tracer.StateSynRecv, 9090},
		{tracer.KindAccept, 0, 0, 9090},
	})
}

func TestJoinerExpiry(t *testing.T) {
	hold := int64(pendingHold)
	t.Run("unfiltered delivers without endpoints", func(t *testing.T) {
		j, rec := newTestJoiner(tracer.Config{})
		j.push(change(1, tracer.StateEstablished, tracer.StateFinWait1, 100))
		j.expire(100 + hold)
		checkDelivered(t, rec.events, nil)
		j.expire(101 + hold)
		checkDelivered(t, rec.events, []step{{tracer.KindState, tracer.StateEstablished, tracer.StateFinWait1, 0}})
	})
	t.Run("filtered drops", func(t *testing.T) {
		j, rec := newTestJoiner(tracer.Config{Ports: tracer.Ports{8080}})
		j.push(change(1, tracer.StateEstablished, tracer.StateFinWait1, 100))
		j.push(change(2, tracer.StateEstablished, tracer.StateFinWait1, int64(time.Hour)))
		j.expire(101 + hold)
		checkDelivered(t, rec.events, nil)
		if j.unjoined != 1 || len(j.pending) != 1 {
			t.Errorf("unjoined %d, pending %d; want 1, 1", j.unjoined, len(j.pending))
		}
	})
}

// TestJoinerDeliveredUpTo: a tick reports no time past a state change
// still waiting for its endpoints, unless it has waited longer than the
// correlator's hold.
func TestJoinerDeliveredUpTo(t *testing.T) {
	const s = int64(time.Second)
	j, _ := newTestJoiner(tracer.Config{Ports: tracer.Ports{8080}})
	if got := j.deliveredUpTo(10 * s); got != 10*s {
		t.Errorf("nothing waiting: delivered up to %d, want %d", got, 10*s)
	}
	j.push(change(1, tracer.StateClose, tracer.StateSynSent, 9*s+5))
	j.push(change(2, tracer.StateClose, tracer.StateSynSent, 9*s+3))
	if got := j.deliveredUpTo(10 * s); got != 9*s+3 {
		t.Errorf("two waiting: delivered up to %d, want the older's time %d", got, 9*s+3)
	}
	if got, want := j.deliveredUpTo(20*s), 20*s-correlate.HoldNs; got != want {
		t.Errorf("waiting longer than the hold: delivered up to %d, want %d", got, want)
	}
}

func TestJoinerPendingBounded(t *testing.T) {
	j, _ := newTestJoiner(tracer.Config{Ports: tracer.Ports{8080}})
	for i := range maxPending + 3 {
		j.push(change(tracer.SockID(i+1), tracer.StateEstablished, tracer.StateFinWait1, int64(i)))
	}
	if len(j.pending) != maxPending || j.unjoined != 3 {
		t.Errorf("pending %d, unjoined %d; want %d, 3", len(j.pending), j.unjoined, maxPending)
	}
	if j.pending[0].Sock != 4 {
		t.Errorf("oldest kept is Tcb %d, want 4", j.pending[0].Sock)
	}
}

func TestJoinerTCBsBounded(t *testing.T) {
	j, _ := newTestJoiner(tracer.Config{})
	for i := range maxTCBs + 10 {
		j.push(named(kindEndpoints, tracer.SockID(i+1), 8080))
	}
	if len(j.tcbs) != maxTCBs {
		t.Errorf("%d Tcbs remembered, want %d", len(j.tcbs), maxTCBs)
	}
}

func TestJoinerDoesNotAllocate(t *testing.T) {
	j := newTCBJoiner(&tracer.Config{Ports: tracer.Ports{8080}}, func(*tracer.Event) {})
	j.push(named(tracer.KindAccept, 1, 8080))
	established := change(1, tracer.StateSynRecv, tracer.StateEstablished, 1)
	unknown := change(2, tracer.StateEstablished, tracer.StateFinWait1, 1)
	// One slot reused for every event, as the source does.
	var ev tracer.Event
	allocs := testing.AllocsPerRun(100, func() {
		ev = *established
		j.push(&ev)
		ev = *unknown
		j.push(&ev)
		j.expire(int64(time.Hour))
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run", allocs)
	}
}
