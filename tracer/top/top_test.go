package top

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const startNs = int64(1_700_000_000e9)

var (
	nginx  = tracer.Process{PID: 100, StartNs: 1, Comm: tracer.CommFrom("nginx")}
	curl   = tracer.Process{PID: 200, StartNs: 2, Comm: tracer.CommFrom("curl")}
	python = tracer.Process{PID: 300, StartNs: 3, Comm: tracer.CommFrom("python3")}
	redis  = tracer.Process{PID: 400, StartNs: 4, Comm: tracer.CommFrom("redis-server")}
	caddy  = tracer.Process{PID: 500, StartNs: 5, Comm: tracer.CommFrom("caddy")}
	nobody = tracer.Process{}
	local  = netip.MustParseAddr("127.0.0.1")
)

func ev(ms int64, kind tracer.Kind, sock tracer.SockID, sport, dport uint16, old, new tracer.State, p tracer.Process) tracer.Event {
	return tracer.Event{TimeNs: startNs + ms*1e6, Kind: kind, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4,
		Sock: sock, SAddr: local, DAddr: local, SPort: sport, DPort: dport, OldState: old, NewState: new, Process: p}
}

// containerNetNS is the network namespace of a container, which top's rows
// label.
const containerNetNS = 4026532288

// netnsLabel labels containerNetNS as top's screen would.
func netnsLabel(netns uint32) string {
	if netns == containerNetNS {
		return "ctr1"
	}
	return ""
}

// scenario is a server that leaks a CLOSE_WAIT: curl connects to nginx on
// 8080 and closes, nginx never does; a second listener on 6379; a bind to
// 8080 that fails; 8080 again in a container, another server's. It returns
// the loop and sink after the events.
func scenario(t *testing.T) (*correlate.Loop, *Sink) {
	sink := NewSink(nil)
	loop := correlate.NewLoop(sink)
	const (
		listener tracer.SockID = iota + 1
		client
		server
		redisListener
		containerListener
	)
	st := tracer.KindState
	inContainer := ev(6, st, containerListener, 8080, 0, tracer.StateClose, tracer.StateListen, caddy)
	inContainer.NetNS = containerNetNS
	for _, e := range []tracer.Event{
		inContainer,
		ev(0, st, listener, 8080, 0, tracer.StateClose, tracer.StateListen, nginx),
		ev(5, st, redisListener, 6379, 0, tracer.StateClose, tracer.StateListen, redis),
		ev(10, st, client, 40000, 8080, tracer.StateClose, tracer.StateSynSent, curl),
		ev(10, st, server, 8080, 40000, tracer.StateListen, tracer.StateSynRecv, nobody),
		ev(11, st, server, 8080, 40000, tracer.StateSynRecv, tracer.StateEstablished, nobody),
		ev(11, st, client, 40000, 8080, tracer.StateSynSent, tracer.StateEstablished, curl),
		ev(12, tracer.KindAccept, server, 8080, 40000, 0, tracer.StateEstablished, nginx),
		ev(20, st, client, 40000, 8080, tracer.StateEstablished, tracer.StateFinWait1, curl),
		ev(21, st, server, 8080, 40000, tracer.StateEstablished, tracer.StateCloseWait, nobody),
		ev(21, st, client, 40000, 8080, tracer.StateFinWait1, tracer.StateFinWait2, nobody),
		{TimeNs: startNs + 30e6, Kind: tracer.KindBind, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4,
			Sock: 9, SAddr: local, SPort: 8080, Err: -98, Process: python},
	} {
		loop.Handle(&e)
	}
	loop.Tick(startNs + 100e6)
	return loop, sink
}

// TestTablePlainGolden: the table of the scenario 90 s in, as the plain
// output prints it, sorted each way.
func TestTablePlainGolden(t *testing.T) {
	loop, sink := scenario(t)
	var out bytes.Buffer
	for k := range sortKeys {
		table := Build(loop.Index(), sink.Snapshot(), nil, nil, startNs+90e9, startNs, 2*time.Second)
		table.Sort(k)
		out.WriteString("=== sorted by " + k.String() + "\n")
		if err := table.WriteRows(&out, -1, netnsLabel); err != nil {
			t.Fatal(err)
		}
	}
	out.WriteString("=== two rows fit\n")
	if err := Build(loop.Index(), sink.Snapshot(), nil, nil, startNs+90e9, startNs, 2*time.Second).WriteRows(&out, 2, netnsLabel); err != nil {
		t.Fatal(err)
	}
	golden(t, "table.txt", out.Bytes())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestRatesBetweenSnapshots: rates are the counts gained since the last
// table, over the time between them; a row whose counts did not change,
// with no socket, is not shown.
func TestRatesBetweenSnapshots(t *testing.T) {
	key := Key{Port: 8080, PID: 100, StartNs: 1}
	prev := &Snapshot{Rows: map[Key]Counts{key: {Opened: 10, Closed: 4}}}
	now := &Snapshot{Rows: map[Key]Counts{key: {Opened: 30, Closed: 14}}}
	table := Build(nil, now, prev, nil, startNs, startNs, 2*time.Second)
	if len(table.Rows) != 1 || table.Rows[0].OpenedPerSec != 10 || table.Rows[0].ClosedPerSec != 5 {
		t.Fatalf("rows %+v, want one opening 10/s and closing 5/s", table.Rows)
	}
	// Nothing new and no socket: nothing left to show.
	if table = Build(nil, now, now, nil, startNs, startNs, time.Second); len(table.Rows) != 0 {
		t.Fatalf("rows %+v, want none without new counts or sockets", table.Rows)
	}
}

// TestAgeOfSocketsOlderThanTheWatch: a socket seen in its state since
// before the watch is at least as old as the watch, and that is what its
// age says.
func TestAgeOfSocketsOlderThanTheWatch(t *testing.T) {
	var a Age
	a.older(startNs+65e9, startNs+60e9, startNs)
	if a.String() != "5s" {
		t.Errorf("seen 5 s ago: %s", a)
	}
	a.older(startNs+65e9, 0, startNs)
	if a.String() != ">1m05s" {
		t.Errorf("older than the watch of 65 s: %s", a)
	}
	a.older(startNs+65e9, startNs+1e9, startNs)
	if a.String() != ">1m05s" {
		t.Errorf("a younger socket changed the oldest: %s", a)
	}
}

// TestSinkPublishesAtMostEveryInterval: counts changed within the
// interval wait for the tick the sink asks for; unchanged counts ask for
// none.
func TestSinkPublishesAtMostEveryInterval(t *testing.T) {
	s := NewSink(tracer.Ports{8080})
	r := tracer.Record{Type: tracer.RecordState, Old: tracer.StateSynSent, New: tracer.StateEstablished, SPort: 40000, DPort: 8080, Process: curl, OwnerVia: tracer.OwnerConnect}
	s.Record(&r)
	if next := s.Tick(startNs); next != tracer.NoDeadline {
		t.Fatalf("asked for a tick at %d after publishing", next)
	}
	if got := s.Snapshot().Rows[Key{Port: 8080, PID: 200, StartNs: 2}].Opened; got != 1 {
		t.Fatalf("published %d opened under the watched port 8080, want 1", got)
	}
	s.Record(&r)
	next := s.Tick(startNs + 1)
	if next != startNs+publishIntervalNs {
		t.Fatalf("asked for a tick at %d, want %d", next, startNs+publishIntervalNs)
	}
	if got := s.Snapshot().Rows[Key{Port: 8080, PID: 200, StartNs: 2}].Opened; got != 1 {
		t.Fatalf("published again within the interval: %d opened", got)
	}
	if s.Tick(next); s.Snapshot().Rows[Key{Port: 8080, PID: 200, StartNs: 2}].Opened != 2 {
		t.Fatal("not published at the deadline asked for")
	}
	if next := s.Tick(next + 1); next != tracer.NoDeadline {
		t.Fatalf("asked for a tick at %d with nothing new", next)
	}
}

// TestRecordAllocatesNothing: counting a record of a known row allocates
// nothing, as the event path must not.
func TestRecordAllocatesNothing(t *testing.T) {
	s := NewSink(nil)
	r := tracer.Record{Type: tracer.RecordState, Old: tracer.StateEstablished, New: tracer.StateFinWait1, SPort: 8080, DPort: 40000, Process: nginx}
	s.Record(&r)
	if n := testing.AllocsPerRun(100, func() { s.Record(&r) }); n != 0 {
		t.Errorf("Record allocates %v times", n)
	}
}
