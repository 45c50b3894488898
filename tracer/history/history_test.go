package history

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// base is the records' clock in these tests: recent, so that retention by
// age keeps them.
var base = time.Now().Add(-time.Hour).Truncate(time.Minute)

func at(d time.Duration) int64 { return base.Add(d).UnixNano() }

var (
	any4   = netip.IPv4Unspecified()
	local4 = netip.MustParseAddr("127.0.0.1")
	peer4  = netip.MustParseAddr("10.0.0.2")
)

// records builds the records a correlator would emit.
func bindRec(ts int64, proto tracer.Proto, port uint16, pid uint32, comm string, errno int32) tracer.Record {
	return tracer.Record{
		TimeNs: ts, Type: tracer.RecordBind, Proto: proto, Family: tracer.FamilyIPv4, SAddr: any4, SPort: port,
		Process: tracer.Process{PID: pid, Comm: tracer.CommFrom(comm)}, OwnerVia: tracer.OwnerBind, DurationNs: -1, Err: errno,
	}
}

func listenRec(ts int64, port uint16, pid uint32, comm string) tracer.Record {
	return tracer.Record{
		TimeNs: ts, Type: tracer.RecordListen, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, Old: tracer.StateClose,
		New: tracer.StateListen, SAddr: any4, SPort: port, Process: tracer.Process{PID: pid, Comm: tracer.CommFrom(comm)}, OwnerVia: tracer.OwnerListen,
		DurationNs: -1,
	}
}

func listenCloseRec(ts int64, port uint16, pid uint32, comm string) tracer.Record {
	r := listenRec(ts, port, pid, comm)
	r.Type, r.Old, r.New = tracer.RecordState, tracer.StateListen, tracer.StateClose
	return r
}

// stateRec is a transition of a connection from local:sport to
// peer:dport.
func stateRec(ts int64, old, new tracer.State, sport, dport uint16, pid uint32, via tracer.OwnerVia) tracer.Record {
	return tracer.Record{
		TimeNs: ts, Type: tracer.RecordState, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, Old: old, New: new,
		SAddr: local4, DAddr: peer4, SPort: sport, DPort: dport, Process: tracer.Process{PID: pid, Comm: tracer.CommFrom("app")}, OwnerVia: via,
		DurationNs: -1,
	}
}

// seedRec is a socket of the start-up snapshot.
func seedRec(ts int64, state tracer.State, port uint16, pid uint32, comm string) tracer.Record {
	r := listenRec(ts, port, pid, comm)
	r.Type, r.Old, r.New, r.OwnerVia = tracer.RecordSocket, tracer.StateUnknown, state, tracer.OwnerSnapshot
	return r
}

// logLines collects what a Store logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// openStore opens a store that the test's end closes, if the test did
// not.
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// feed hands records to the store as the event loop would, then waits
// until they are in the database.
func feed(t testing.TB, s *Store, recs ...tracer.Record) {
	t.Helper()
	var last int64
	for i := range recs {
		s.Record(&recs[i])
		last = max(last, recs[i].TimeNs)
	}
	s.Tick(last + countsFlushNs)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}

func query(t *testing.T, s *Store, port uint16) Result {
	t.Helper()
	r, err := s.Query(port, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestListenerLife(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	feed(t, s,
		bindRec(at(0), tracer.ProtoTCP, 8080, 100, "nginx", 0),
		listenRec(at(time.Second), 8080, 100, "nginx"),
		listenCloseRec(at(time.Minute), 8080, 100, "nginx"),
		listenRec(at(2*time.Minute), 8080, 200, "python3"),
	)
	r := query(t, s, 8080)
	want := []Holder{
		{Socket: Socket{Proto: tracer.ProtoTCP, Addr: any4, Port: 8080}, Owner: Process{PID: 100, Comm: "nginx"}, Via: tracer.OwnerBind,
			FromNs: at(0), ListenNs: at(time.Second), UntilNs: at(time.Minute), End: EndClosed},
		{Socket: Socket{Proto: tracer.ProtoTCP, Addr: any4, Port: 8080}, Owner: Process{PID: 200, Comm: "python3"}, Via: tracer.OwnerListen,
			FromNs: at(2 * time.Minute), ListenNs: at(2 * time.Minute)},
	}
	checkHolders(t, r.Holders, want)

	// The range takes the holders that held the port at some time in it.
	r, err := s.Query(8080, base.Add(90*time.Second), base.Add(100*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	checkHolders(t, r.Holders, nil)
	r, _ = s.Query(8080, base.Add(30*time.Second), base.Add(100*time.Second))
	checkHolders(t, r.Holders, want[:1])

	h, ok, err := s.LastHolder(8080)
	if err != nil || !ok || h != want[1] {
		t.Errorf("LastHolder = %+v, %v, %v; want %+v", h, ok, err, want[1])
	}
	if _, ok, _ := s.LastHolder(8081); ok {
		t.Error("LastHolder of a port nobody held says someone did")
	}
}

// TestMPTCPListenerLife: an MPTCP listener (Go's default) is one holder:
// its bind names MPTCP, its listen and close, traced on its subflow, TCP.
func TestMPTCPListenerLife(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	feed(t, s,
		bindRec(at(0), tracer.ProtoMPTCP, 8080, 100, "server", 0),
		listenRec(at(time.Second), 8080, 100, "server"),
		listenCloseRec(at(time.Minute), 8080, 100, "server"),
	)
	checkHolders(t, query(t, s, 8080).Holders, []Holder{
		{Socket: Socket{Proto: tracer.ProtoMPTCP, Addr: any4, Port: 8080}, Owner: Process{PID: 100, Comm: "server"}, Via: tracer.OwnerBind,
			FromNs: at(0), ListenNs: at(time.Second), UntilNs: at(time.Minute), End: EndClosed},
	})
}

func checkHolders(t *testing.T, got, want []Holder) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("holders:\n got %+v\nwant %+v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("holder %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// TestFreePortLastHolder: once the port is free, LastHolder names who let
// go last, and when.
func TestFreePortLastHolder(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	feed(t, s,
		listenRec(at(0), 9000, 1, "a"),
		listenRec(at(time.Second), 9000, 2, "b"),
		listenCloseRec(at(3*time.Second), 9000, 2, "b"),
		listenCloseRec(at(2*time.Second), 9000, 1, "a"),
		// A listener porttrace only saw close.
		listenCloseRec(at(time.Minute), 9001, 3, "c"),
	)
	h, ok, err := s.LastHolder(9000)
	if err != nil || !ok || h.Owner.PID != 2 || h.UntilNs != at(3*time.Second) || h.End != EndClosed {
		t.Errorf("LastHolder(9000) = %+v, %v, %v; want pid 2 until +3s", h, ok, err)
	}
	h, ok, err = s.LastHolder(9001)
	if err != nil || !ok || h.Owner.PID != 3 || h.FromNs != 0 || h.UntilNs != at(time.Minute) {
		t.Errorf("LastHolder(9001) = %+v, %v, %v; want pid 3, start unknown, until +1m", h, ok, err)
	}
}

func TestFailedBinds(t *testing.T) {
	var facts []uint32
	s := openStore(t, t.TempDir(), Options{Describe: func(p *Process) {
		facts = append(facts, p.PID) // the writer goroutine, one at a time
		p.Exe, p.StartNs = "/usr/bin/"+p.Comm, 42
	}})
	var recs []tracer.Record
	for i := range 5 {
		recs = append(recs, bindRec(at(time.Duration(i)*time.Second), tracer.ProtoTCP, 8080, uint32(10+i), "srv", 98))
	}
	recs = append(recs, bindRec(at(0), tracer.ProtoUDP, 53, 7, "dns", 13))
	feed(t, s, recs...)

	got, err := s.RecentFailedBinds(8080, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("RecentFailedBinds = %+v, want the last 3", got)
	}
	for i, f := range got {
		want := FailedBind{
			TimeNs: at(time.Duration(i+2) * time.Second), Socket: Socket{Proto: tracer.ProtoTCP, Addr: any4, Port: 8080}, Errno: 98,
			By: Process{PID: uint32(12 + i), Comm: "srv", Exe: "/usr/bin/srv", StartNs: 42},
		}
		if f != want {
			t.Errorf("failed bind %d:\n got %+v\nwant %+v", i, f, want)
		}
	}
	r, err := s.Query(8080, base.Add(time.Second), base.Add(3*time.Second))
	if err != nil || len(r.FailedBinds) != 3 || r.FailedBinds[0].By.PID != 11 {
		t.Errorf("Query from +1s to +3s: %+v, %v; want pids 11 to 13", r.FailedBinds, err)
	}
	if r := query(t, s, 53); len(r.FailedBinds) != 1 || r.FailedBinds[0].Errno != 13 || r.FailedBinds[0].Socket.Proto != tracer.ProtoUDP {
		t.Errorf("port 53: %+v, want one EACCES of UDP", r.FailedBinds)
	}
	if len(facts) != 6 {
		t.Errorf("Describe was asked about %v, want the 6 binders", facts)
	}
}

// TestConnectionCounts: connections in through a listener count under its
// port, connections out under the remote port, per minute.
func TestConnectionCounts(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	recs := []tracer.Record{listenRec(at(0), 8080, 1, "srv")}
	for i := range 3 {
		sport := uint16(50000 + i)
		recs = append(recs,
			stateRec(at(time.Second), tracer.StateSynRecv, tracer.StateEstablished, 8080, sport, 1, tracer.OwnerAccept),
			stateRec(at(2*time.Second), tracer.StateEstablished, tracer.StateCloseWait, 8080, sport, 1, tracer.OwnerAccept))
	}
	// A socket seen mid-life (no owner) on the listening port is inbound
	// too; the next minute's close counts there.
	recs = append(recs,
		stateRec(at(70*time.Second), tracer.StateSynRecv, tracer.StateEstablished, 8080, 50100, 0, tracer.OwnerUnknown),
		stateRec(at(80*time.Second), tracer.StateEstablished, tracer.StateFinWait1, 8080, 50100, 0, tracer.OwnerUnknown),
		// Out to a database: under its port, 5432.
		stateRec(at(75*time.Second), tracer.StateSynSent, tracer.StateEstablished, 40000, 5432, 9, tracer.OwnerConnect),
		// A handshake that never completed is not a connection.
		stateRec(at(76*time.Second), tracer.StateSynSent, tracer.StateClose, 40001, 5432, 9, tracer.OwnerConnect),
	)
	feed(t, s, recs...)

	want := []Connections{
		{MinuteNs: at(0), Inbound: ConnCounts{Opened: 3, Closed: 3}},
		{MinuteNs: at(time.Minute), Inbound: ConnCounts{Opened: 1, Closed: 1}},
	}
	if got := query(t, s, 8080).Connections; !slices.Equal(got, want) {
		t.Errorf("port 8080:\n got %+v\nwant %+v", got, want)
	}
	want = []Connections{{MinuteNs: at(time.Minute), Outbound: ConnCounts{Opened: 1}}}
	if got := query(t, s, 5432).Connections; !slices.Equal(got, want) {
		t.Errorf("port 5432:\n got %+v\nwant %+v", got, want)
	}
	// Counts of one minute that reach the writer in several flushes add
	// up.
	feed(t, s, stateRec(at(85*time.Second), tracer.StateSynSent, tracer.StateEstablished, 40002, 5432, 9, tracer.OwnerConnect))
	want[0].Outbound.Opened = 2
	if got := query(t, s, 5432).Connections; !slices.Equal(got, want) {
		t.Errorf("port 5432 after a second flush:\n got %+v\nwant %+v", got, want)
	}
}

// TestOwnerChange: a supervisor binds, a worker listens on its socket.
func TestOwnerChange(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	feed(t, s,
		bindRec(at(0), tracer.ProtoTCP, 443, 1, "supervisor", 0),
		listenRec(at(time.Second), 443, 2, "worker"),
	)
	r := query(t, s, 443)
	sock := Socket{Proto: tracer.ProtoTCP, Addr: any4, Port: 443}
	checkHolders(t, r.Holders, []Holder{
		{Socket: sock, Owner: Process{PID: 1, Comm: "supervisor"}, Via: tracer.OwnerBind, FromNs: at(0), UntilNs: at(time.Second), End: EndHandedOver},
		{Socket: sock, Owner: Process{PID: 2, Comm: "worker"}, Via: tracer.OwnerListen, FromNs: at(time.Second), ListenNs: at(time.Second)},
	})
	want := OwnerChange{TimeNs: at(time.Second), Socket: sock, From: Process{PID: 1, Comm: "supervisor"}, To: Process{PID: 2, Comm: "worker"}, Via: tracer.OwnerListen}
	if len(r.OwnerChanges) != 1 || r.OwnerChanges[0] != want {
		t.Errorf("owner changes:\n got %+v\nwant %+v", r.OwnerChanges, want)
	}
}

// TestBoundSocketEnds: a socket bound before connect() lets go of its port
// when its connection ends.
func TestBoundSocketEnds(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	feed(t, s,
		bindRec(at(0), tracer.ProtoTCP, 40000, 5, "client", 0),
		stateRec(at(time.Second), tracer.StateClose, tracer.StateSynSent, 40000, 80, 5, tracer.OwnerConnect),
		stateRec(at(2*time.Second), tracer.StateSynSent, tracer.StateEstablished, 40000, 80, 5, tracer.OwnerConnect),
		stateRec(at(3*time.Second), tracer.StateEstablished, tracer.StateFinWait1, 40000, 80, 5, tracer.OwnerConnect),
		stateRec(at(4*time.Second), tracer.StateFinWait2, tracer.StateTimeWait, 40000, 80, 5, tracer.OwnerConnect),
	)
	r := query(t, s, 40000)
	if len(r.Holders) != 1 || r.Holders[0].End != EndClosed || r.Holders[0].UntilNs != at(4*time.Second) {
		t.Errorf("holders: %+v, want one closed at +4s", r.Holders)
	}
}

// TestBoundedOpenHolders: bound UDP sockets, whose end no record shows,
// do not pile up as open holders.
func TestBoundedOpenHolders(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	var recs []tracer.Record
	for i := range 3 * maxOpenBound {
		recs = append(recs, bindRec(at(time.Duration(i)*time.Second), tracer.ProtoUDP, 5353, uint32(100+i), "mdns", 0))
	}
	// The same process binding again (SO_REUSEPORT) is the same holder.
	recs = append(recs, recs[len(recs)-1])
	feed(t, s, recs...)
	r := query(t, s, 5353)
	if len(r.Holders) != 3*maxOpenBound {
		t.Fatalf("%d holders, want %d", len(r.Holders), 3*maxOpenBound)
	}
	held := 0
	for i, h := range r.Holders {
		if h.Held() {
			held++
		} else if h.End != EndUnseen || i >= 2*maxOpenBound {
			t.Errorf("holder %d ended %v, want the oldest ones unseen", i, h.End)
		}
	}
	if held != maxOpenBound {
		t.Errorf("%d open holders, want %d", held, maxOpenBound)
	}
}

func TestRestartKeepsHistory(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	feed(t, s,
		listenRec(at(0), 8080, 100, "nginx"),
		listenRec(at(0), 9090, 200, "gone"),
		bindRec(at(time.Second), tracer.ProtoTCP, 8080, 300, "late", 98),
		stateRec(at(2*time.Second), tracer.StateSynRecv, tracer.StateEstablished, 8080, 50000, 100, tracer.OwnerAccept),
	)
	before := query(t, s, 8080)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	after := query(t, s, 8080)
	checkHolders(t, after.Holders, before.Holders)
	if len(after.FailedBinds) != 1 || after.FailedBinds[0] != before.FailedBinds[0] ||
		!slices.Equal(after.Connections, before.Connections) || len(after.Connections) != 1 {
		t.Errorf("after a restart:\n got %+v\nwant %+v", after, before)
	}

	// The new run's snapshot finds nginx still listening, and the other
	// holder gone.
	restart := at(time.Hour)
	snapshotFindsNginx(t, s, restart)
	if h := query(t, s, 9090).Holders; len(h) != 1 || h[0].End != EndUnseen || h[0].UntilNs != restart+1 {
		t.Errorf("port 9090 after the snapshot: %+v, want the holder gone unseen at the restart", h)
	}
}

// TestSnapshotAwaitedPastOlderRecords: the loop takes its start-up
// snapshot after the events older than it, whose records and ticks come
// first: they do not end the snapshot, whose holders an earlier run kept.
func TestSnapshotAwaitedPastOlderRecords(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	feed(t, s, listenRec(at(0), 8080, 100, "nginx"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	restart := at(time.Hour)
	s.AwaitSnapshot(restart)
	older := bindRec(restart-int64(time.Millisecond), tracer.ProtoTCP, 9090, 300, "other", 0)
	s.Record(&older)
	s.Tick(restart - 1)
	snapshotFindsNginx(t, s, restart)
}

// snapshotFindsNginx is the start-up snapshot of a restart at restart,
// which finds nginx (pid 100) still listening on 8080, where it has since
// +0.
func snapshotFindsNginx(t *testing.T, s *Store, restart int64) {
	t.Helper()
	seed := seedRec(restart, tracer.StateListen, 8080, 100, "nginx")
	s.Record(&seed)
	s.Tick(restart + 1)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if h := query(t, s, 8080).Holders; len(h) != 1 || !h[0].Held() || h[0].FromNs != at(0) {
		t.Errorf("port 8080 after the snapshot: %+v, want nginx holding it since +0", h)
	}
}

func TestOneStorePerDirectory(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	_, err := Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "in use by another porttrace") {
		t.Errorf("second Open: %v, want in use", err)
	}
	s.Close()
	s = openStore(t, dir, Options{})
	s.Close()
}

func TestBadOptions(t *testing.T) {
	for _, opts := range []Options{{MaxBytes: 1000}, {MaxAge: -time.Hour}} {
		if _, err := Open(t.TempDir(), opts); err == nil {
			t.Errorf("Open with %+v succeeded", opts)
		}
	}
}

// TestRecordAllocates nothing, for every kind of record.
func TestRecordAllocates(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	recs := []tracer.Record{
		bindRec(at(0), tracer.ProtoTCP, 8080, 1, "a", 0),
		listenRec(at(0), 8080, 1, "a"),
		bindRec(at(0), tracer.ProtoTCP, 8080, 2, "b", 98),
		stateRec(at(0), tracer.StateSynRecv, tracer.StateEstablished, 8080, 50000, 1, tracer.OwnerAccept),
		stateRec(at(0), tracer.StateEstablished, tracer.StateCloseWait, 8080, 50000, 1, tracer.OwnerAccept),
		listenCloseRec(at(0), 8080, 1, "a"),
	}
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		r := &recs[i%len(recs)]
		r.TimeNs += int64(time.Millisecond)
		s.Record(r)
		s.Tick(r.TimeNs)
		i++
	})
	if allocs != 0 {
		t.Errorf("Record allocates %v times per record, want 0", allocs)
	}
}

// TestListenerChangesHands: nginx with daemon on: the startup process
// listens and exits, and porttrace finds the master holding the listener
// (an owner record): history ends the first holder and starts the master's.
func TestListenerChangesHands(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	handed := listenRec(at(2*time.Second), 8080, 20, "nginx")
	handed.Type, handed.Old, handed.OwnerVia = tracer.RecordOwner, tracer.StateUnknown, tracer.OwnerHolder
	handed.Prev = tracer.Process{PID: 10, Comm: tracer.CommFrom("nginx")}
	feed(t, s, listenRec(at(time.Second), 8080, 10, "nginx"), handed)
	r := query(t, s, 8080)
	sock := Socket{Proto: tracer.ProtoTCP, Addr: any4, Port: 8080}
	checkHolders(t, r.Holders, []Holder{
		{Socket: sock, Owner: Process{PID: 10, Comm: "nginx"}, Via: tracer.OwnerListen, FromNs: at(time.Second), ListenNs: at(time.Second), UntilNs: at(2 * time.Second), End: EndHandedOver},
		{Socket: sock, Owner: Process{PID: 20, Comm: "nginx"}, Via: tracer.OwnerHolder, FromNs: at(2 * time.Second), ListenNs: at(time.Second)},
	})
	if len(r.OwnerChanges) != 1 || r.OwnerChanges[0].From.PID != 10 || r.OwnerChanges[0].To.PID != 20 {
		t.Errorf("owner changes: %+v, want 10 -> 20", r.OwnerChanges)
	}
}

// TestDropsLogged: the writer says how many changes were dropped since it
// last said so, at most every dropsLogEvery, and nothing once history has
// stopped (fail said why).
func TestDropsLogged(t *testing.T) {
	log := &logLines{}
	s := &Store{opts: Options{Logf: log.logf}}
	var d dropsLogged
	start := time.Unix(1000, 0)
	d.log(s, start)
	s.dropped.Add(5)
	d.log(s, start.Add(time.Second))
	s.dropped.Add(3)
	d.log(s, start.Add(5*time.Second)) // too soon after the last line
	d.log(s, start.Add(12*time.Second))
	d.log(s, start.Add(30*time.Second)) // nothing new
	s.dropped.Add(1)
	s.failed.Store(true)
	d.log(s, start.Add(60*time.Second))
	want := []string{
		"history dropped 5 changes (5 in all): its writer fell behind the events (a slow disk?)",
		"history dropped 3 changes (8 in all): its writer fell behind the events (a slow disk?)",
	}
	if !slices.Equal(log.lines, want) {
		t.Errorf("logged %q, want %q", log.lines, want)
	}
}

// TestSyncGivesUp: SyncContext returns when its context ends, whether its
// request waits for room in the queue or for a writer that never answers
// (a disk that hangs in a commit).
func TestSyncGivesUp(t *testing.T) {
	for _, room := range []int{0, 1} {
		s := &Store{changes: make(chan change, room), done: make(chan struct{})}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := s.SyncContext(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("queue room %d, no writer: %v, want the context's deadline", room, err)
		}
	}
}
