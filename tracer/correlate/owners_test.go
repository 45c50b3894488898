package correlate

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// exit is the exit of process pid (started at 0, as ev's processes).
func exit(ms int64, pid uint32) tracer.Event {
	return tracer.Event{TimeNs: ms * 1e6, Kind: tracer.KindExit, Process: tracer.Process{PID: pid, Comm: tracer.CommFrom(fmt.Sprint("p", pid))}}
}

// ownerLine renders a record as line does, with what an owner line and an
// exited owner add.
func ownerLine(r *tracer.Record) string {
	s := line(r)
	if r.Type == tracer.RecordOwner {
		s = fmt.Sprintf("%d %s:%d>%d OWNER %s %s from %d", r.PID, r.SAddr, r.SPort, r.DPort, r.New, r.OwnerVia, r.Prev.PID)
		if r.PrevExited {
			s += " (exited)"
		}
	}
	if r.OwnerExited {
		s += " (owner exited)"
	}
	return s
}

// holderCorrelator is a correlator whose loop can look up holders; its
// lookups go to the returned list.
func holderCorrelator(got *[]string) *Correlator {
	c := NewCorrelator(func(r *tracer.Record) { *got = append(*got, ownerLine(r)) })
	c.findsHolders = true
	return c
}

func holder(sock tracer.SockID, pid uint32, startNs uint64) tracer.Holder {
	return tracer.Holder{Sock: sock, Process: tracer.Process{PID: pid, StartNs: startNs, Comm: tracer.CommFrom(fmt.Sprint("p", pid))}}
}

// TestCorrelatorDaemonForkedAfterListen: the process that listened forks
// the daemon and exits; the listener lives on in the daemon and its
// workers. After the exit's grace the loop looks up the holders, and the
// oldest (the master) takes the listener over, which its close then shows.
func TestCorrelatorDaemonForkedAfterListen(t *testing.T) {
	var got []string
	c := holderCorrelator(&got)
	feed(t, c, []tracer.Event{
		state(5, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
		exit(10, listener),
		tick(60),
	})
	if q := c.takeHolderQueries(); q != nil {
		t.Fatalf("asked %v before the exit's grace passed", q)
	}
	feed(t, c, []tracer.Event{tick(110)})
	q := c.takeHolderQueries()
	if want := []tracer.HolderQuery{{Sock: listenSock, Port: 8080}}; !slices.Equal(q, want) {
		t.Fatalf("asked %v, want %v", q, want)
	}
	if again := c.takeHolderQueries(); again != nil {
		t.Fatalf("asked %v again while the first lookup is under way", again)
	}
	// A worker (started later) and the master both hold it.
	c.applyHolders([]tracer.Holder{holder(listenSock, 202, 2000), holder(listenSock, 201, 0), holder(0x7777, 5, 0)}, nil, 120e6)
	feed(t, c, []tracer.Event{state(500, atListener, listenSock, tracer.StateListen, tracer.StateClose, 201)})
	want := []string{
		"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
		"201 10.0.0.1:8080>0 OWNER LISTEN holder from 100 (exited)",
		"201 10.0.0.1:8080>0 LISTEN->CLOSE holder 495ms",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got:\n  %s\nwant:\n  %s", join(got), join(want))
	}
	if s := c.Stats(); s.Exits != 1 || s.Handovers != 1 {
		t.Errorf("stats: %d exits, %d handovers, want 1 and 1", s.Exits, s.Handovers)
	}
}

// TestCorrelatorOwnerExits covers the other ends of an owner's exit.
func TestCorrelatorOwnerExits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		events  []tracer.Event
		holders []tracer.Holder
		want    []string
	}{{
		name: "the exit closes the socket: no lookup, the owner is shown exited",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			state(11, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq),
			exit(20, client),
			state(20, atClient, clientSock, tracer.StateEstablished, tracer.StateFinWait1, client),
			tick(200),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 1ms",
			"300 10.0.0.2:40000>8080 ESTABLISHED->FIN_WAIT1 connect 9ms (owner exited)",
		},
	}, {
		name: "a later process given the owner's pid is not the owner",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			func() tracer.Event { e := exit(20, client); e.StartNs = 99; return e }(),
			tick(200),
			state(300, atClient, clientSock, tracer.StateSynSent, tracer.StateEstablished, softirq),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->ESTABLISHED connect 290ms",
		},
	}, {
		name: "nobody else holds it: the owner stays, shown exited",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			exit(20, client),
			tick(200),
		},
		holders: []tracer.Holder{},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
		},
	}, {
		name: "the holders not looked up: the process closing the listener took it over",
		events: []tracer.Event{
			state(5, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
			state(300, atListener, listenSock, tracer.StateListen, tracer.StateClose, 201),
		},
		want: []string{
			"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
			"201 10.0.0.1:8080>0 OWNER LISTEN close from 100",
			"201 10.0.0.1:8080>0 LISTEN->CLOSE close 295ms",
		},
	}, {
		name: "an owner's list emptied and its slot taken by another's: the first's exit leaves the other's socket alone",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			state(11, atClient, clientSock, tracer.StateSynSent, tracer.StateClose, client),
			ev(20, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
			exit(30, client),
			state(40, atServer, serverSock, tracer.StateEstablished, tracer.StateCloseWait, softirq),
			exit(50, worker),
			state(50, atServer, serverSock, tracer.StateCloseWait, tracer.StateLastAck, worker),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->CLOSE connect 1ms",
			"200 10.0.0.1:8080>40000 ESTABLISHED->CLOSE_WAIT accept",
			"200 10.0.0.1:8080>40000 CLOSE_WAIT->LAST_ACK accept 10ms (owner exited)",
		},
	}, {
		name: "an owner's list emptied and filled again, then another's: each exit finds its own sockets",
		events: []tracer.Event{
			state(10, atClient, clientSock, tracer.StateClose, tracer.StateSynSent, client),
			state(11, atClient, clientSock, tracer.StateSynSent, tracer.StateClose, client),
			state(12, atClient, twSock, tracer.StateClose, tracer.StateSynSent, client),
			ev(20, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
			exit(30, client),
			state(30, atClient, twSock, tracer.StateSynSent, tracer.StateClose, client),
			exit(40, worker),
			state(40, atServer, serverSock, tracer.StateEstablished, tracer.StateFinWait1, worker),
		},
		want: []string{
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->CLOSE connect 1ms",
			"300 10.0.0.2:40000>8080 CLOSE->SYN_SENT connect",
			"300 10.0.0.2:40000>8080 SYN_SENT->CLOSE connect 18ms (owner exited)",
			"200 10.0.0.1:8080>40000 ESTABLISHED->FIN_WAIT1 accept (owner exited)",
		},
	}, {
		name: "a child closes a connection its parent accepted: it changed hands",
		events: []tracer.Event{
			ev(10, tracer.KindAccept, atServer, serverSock, 0, tracer.StateEstablished, worker),
			state(20, atServer, serverSock, tracer.StateEstablished, tracer.StateFinWait1, 250),
			state(21, atServer, serverSock, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
		},
		want: []string{
			"250 10.0.0.1:8080>40000 OWNER ESTABLISHED close from 200",
			"250 10.0.0.1:8080>40000 ESTABLISHED->FIN_WAIT1 close",
			"250 10.0.0.1:8080>40000 FIN_WAIT1->FIN_WAIT2 close 1ms",
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			c := holderCorrelator(&got)
			for i := range tc.events {
				e := &tc.events[i]
				if e.Kind == 0 {
					c.Tick(e.TimeNs)
					if q := c.takeHolderQueries(); q != nil {
						c.applyHolders(tc.holders, nil, e.TimeNs)
					}
					continue
				}
				c.Handle(e)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got:\n  %s\nwant:\n  %s", join(got), join(tc.want))
			}
		})
	}
}

// TestCorrelatorHoldersAfterClose: an answer that comes back after the
// socket closed changes nothing.
func TestCorrelatorHoldersAfterClose(t *testing.T) {
	var got []string
	c := holderCorrelator(&got)
	feed(t, c, []tracer.Event{
		state(5, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
		exit(10, listener),
		tick(200),
	})
	if q := c.takeHolderQueries(); len(q) != 1 {
		t.Fatalf("asked %v, want the listener", q)
	}
	feed(t, c, []tracer.Event{state(210, atListener, listenSock, tracer.StateListen, tracer.StateClose, listener)})
	c.applyHolders([]tracer.Holder{holder(listenSock, 201, 1000)}, nil, 220e6)
	want := []string{
		"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
		"100 10.0.0.1:8080>0 LISTEN->CLOSE listen 205ms (owner exited)",
	}
	if !slices.Equal(got, want) || c.Live() != 0 {
		t.Errorf("%d sockets live; got:\n  %s\nwant:\n  %s", c.Live(), join(got), join(want))
	}
}

// TestCorrelatorExitWithoutHolderLookup: where the platform cannot look up
// holders, an owner's exit only marks its sockets.
func TestCorrelatorExitWithoutHolderLookup(t *testing.T) {
	var got []string
	c := NewCorrelator(func(r *tracer.Record) { got = append(got, ownerLine(r)) })
	feed(t, c, []tracer.Event{
		state(5, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener),
		exit(10, listener),
		tick(200),
		state(300, atListener, listenSock, tracer.StateListen, tracer.StateClose, listener),
	})
	want := []string{
		"100 10.0.0.1:8080>0 CLOSE->LISTEN listen",
		"100 10.0.0.1:8080>0 LISTEN->CLOSE listen 295ms (owner exited)",
	}
	if q := c.takeHolderQueries(); q != nil || !slices.Equal(got, want) {
		t.Errorf("asked %v; got:\n  %s\nwant:\n  %s", q, join(got), join(want))
	}
}

// holderSource plays events to a loop, then ticks it at the deadlines it
// names, and when woken, as an idle source would, until the context ends;
// it finds the holders it was given.
type holderSource struct {
	events  []tracer.Event
	holders []tracer.Holder
	mu      sync.Mutex
	asked   [][]tracer.HolderQuery
	woken   chan struct{}
	// asleep says Run went to sleep, for a test to hand the loop work.
	asleep chan struct{}
}

func newHolderSource(events []tracer.Event, holders []tracer.Holder) *holderSource {
	return &holderSource{events: events, holders: holders, woken: make(chan struct{}, 1), asleep: make(chan struct{}, 1)}
}

func (s *holderSource) Run(ctx context.Context, h tracer.Handler) error {
	for i := range s.events {
		h.Handle(&s.events[i])
	}
	for now := int64(0); ctx.Err() == nil; time.Sleep(time.Millisecond) {
		next := h.Tick(now)
		if next == tracer.NoDeadline {
			// Asleep until woken, as the Linux source on its ring.
			select {
			case s.asleep <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
			case <-s.woken:
			}
			continue
		}
		now = max(now, next)
	}
	return nil
}

func (s *holderSource) Wake() {
	select {
	case s.woken <- struct{}{}:
	default:
	}
}

func (s *holderSource) FindHolders(q []tracer.HolderQuery) ([]tracer.Holder, error) {
	s.mu.Lock()
	s.asked = append(s.asked, q)
	s.mu.Unlock()
	return s.holders, nil
}

func (*holderSource) Lost() tracer.Lost { return tracer.Lost{} }
func (*holderSource) Hooks() []string   { return nil }
func (*holderSource) Close() error      { return nil }

// recordSink keeps the records a loop emits.
type recordSink struct {
	mu   sync.Mutex
	recs []tracer.Record
}

func (s *recordSink) Record(r *tracer.Record) {
	s.mu.Lock()
	s.recs = append(s.recs, *r)
	s.mu.Unlock()
}
func (*recordSink) Tick(int64) int64 { return tracer.NoDeadline }

func (s *recordSink) owners() []tracer.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.recs), func(r tracer.Record) bool { return r.Type != tracer.RecordOwner })
}

// TestLoopFindsHolders: the loop asks a source that can find holders from
// a goroutine of its own, and the answer reaches the correlator on a tick
// (the loop asks for ticks while a question is out, even of a source that
// sleeps); the published index then names the new owner.
func TestLoopFindsHolders(t *testing.T) {
	src := newHolderSource(
		[]tracer.Event{state(5, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener), exit(10, listener)},
		[]tracer.Holder{holder(listenSock, 201, 1000)})
	sink := &recordSink{}
	loop := NewLoop(sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx, src) }()
	for deadline := time.Now().Add(10 * time.Second); len(sink.owners()) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no owner line after 10s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r := sink.owners()[0]
	if r.PID != 201 || r.Prev.PID != listener || !r.PrevExited || r.OwnerVia != tracer.OwnerHolder {
		t.Errorf("owner line %+v", r)
	}
	if got := loop.Index().ByLocalPort(8080); len(got) != 1 || got[0].Process.PID != 201 || got[0].Exited {
		t.Errorf("index: %+v, want the listener owned by 201", got)
	}
	if len(src.asked) != 1 {
		t.Errorf("asked %d times, want once: %v", len(src.asked), src.asked)
	}
}

// runAsleep runs loop on src until the test ends, and returns once src
// has gone to sleep.
func runAsleep(t *testing.T, loop *Loop, src *holderSource) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx, src) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-src.asleep
}

// TestLoopReseedWakesSource: a snapshot handed to a loop whose source
// sleeps until its next event (none comes) is reconciled with at once.
func TestLoopReseedWakesSource(t *testing.T) {
	src := newHolderSource(nil, nil)
	loop := NewLoop()
	runAsleep(t, loop, src)
	loop.Reseed(&snapshot.PortReport{
		Sockets: []snapshot.PortSocket{{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen,
			Local: netip.AddrPortFrom(serverAddr, 8080), Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), NetNS: 1,
			Sock: listenSock, PIDs: []uint32{listener}}},
		Processes: map[uint32]*proc.Process{listener: {Identity: proc.Identity{PID: listener}, Name: "p100"}},
	}, 1000)
	for deadline := time.Now().Add(10 * time.Second); loop.Index().Len() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the snapshot's listener not in the index after 10s")
		}
	}
}

// TestLoopPublishesOnDemand: a watch's loop builds no index as events
// come, and one with them when a reader asks, waking a source that sleeps.
func TestLoopPublishesOnDemand(t *testing.T) {
	src := newHolderSource([]tracer.Event{state(5, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener)}, nil)
	loop := NewLoop()
	loop.PublishOnDemand()
	runAsleep(t, loop, src)
	if n := loop.Index().Len(); n != 0 {
		t.Errorf("the index has %d sockets before anyone asked, want the empty one it started with", n)
	}
	if got := loop.FreshIndex().ByLocalPort(8080); len(got) != 1 || got[0].Process.PID != listener {
		t.Errorf("FreshIndex: %+v, want the listener", got)
	}
}

// OnPort yields a port's listeners and accepted sockets, then the clients
// connected to it from this host, a socket with the port at both ends once,
// and stops where the reader stops.
func TestIndexOnPort(t *testing.T) {
	end := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port) }
	x := newIndex(1, Stats{}, []Owned{
		{State: tracer.StateListen, Local: end(8080)},
		{State: tracer.StateEstablished, Local: end(8080), Remote: end(40000)},
		{State: tracer.StateEstablished, Local: end(40000), Remote: end(8080)},
		{State: tracer.StateEstablished, Local: end(8080), Remote: end(8080)},
		{State: tracer.StateEstablished, Local: end(9090), Remote: end(40001)},
		{State: tracer.StateEstablished, Local: end(40001), Remote: end(9090)},
	}, nil)
	var got []string
	for o := range x.OnPort(8080) {
		got = append(got, o.Local.String()+">"+o.Remote.String())
	}
	// Sockets with the same local port come in no particular order.
	if len(got) == 4 {
		slices.Sort(got[:3])
	}
	want := []string{
		"127.0.0.1:8080>127.0.0.1:40000", "127.0.0.1:8080>127.0.0.1:8080", "127.0.0.1:8080>invalid AddrPort",
		"127.0.0.1:40000>127.0.0.1:8080",
	}
	if !slices.Equal(got, want) {
		t.Errorf("OnPort(8080) = %q, want %q", got, want)
	}
	n := 0
	for range x.OnPort(8080) {
		if n++; n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("reading stopped after %d sockets, want 2", n)
	}
	var none *Index
	for o := range none.OnPort(8080) {
		t.Errorf("a nil index yielded %v", o)
	}
}

// TestPublishCost: a rebuild that took long because the loop was not
// running (stopped, or kept from a CPU) raises the estimate of what a
// rebuild costs at most twofold; rebuilds that keep taking long raise it
// all the way, and a cheap one lowers it at once.
func TestPublishCost(t *testing.T) {
	const ms = int64(1e6)
	// The least estimate an outlier may double.
	const floor = publishIntervalNs / publishCostFactor
	if got := publishCost(0, 500*ms); got != 2*floor {
		t.Errorf("a first rebuild of 500ms costs %dns, want %dns", got, 2*floor)
	}
	if got := publishCost(10*ms, 500*ms); got != 20*ms {
		t.Errorf("after 10ms, a rebuild of 500ms costs %dms, want 20ms", got/ms)
	}
	cost := int64(0)
	for range 20 {
		cost = publishCost(cost, 500*ms)
	}
	if cost != 500*ms {
		t.Errorf("after twenty rebuilds of 500ms, one costs %dms, want 500ms", cost/ms)
	}
	if got := publishCost(cost, ms); got != ms {
		t.Errorf("after 500ms, a rebuild of 1ms costs %dms, want 1ms", got/ms)
	}
}
