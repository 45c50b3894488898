package metrics

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

var (
	any4   = netip.IPv4Unspecified()
	local4 = netip.MustParseAddr("127.0.0.1")
	peer4  = netip.MustParseAddr("10.0.0.2")
)

func stateRec(old, new tracer.State, sport, dport uint16, durationNs int64) tracer.Record {
	typ := tracer.RecordState
	if new == tracer.StateListen {
		typ = tracer.RecordListen
	}
	return tracer.Record{
		Type: typ, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, Old: old, New: new,
		SAddr: local4, DAddr: peer4, SPort: sport, DPort: dport, Process: tracer.Process{PID: 1}, DurationNs: durationNs,
	}
}

func failedBind(proto tracer.Proto, port uint16, errno int32) tracer.Record {
	return tracer.Record{Type: tracer.RecordBind, Proto: proto, Family: tracer.FamilyIPv4, SAddr: any4, SPort: port, Process: tracer.Process{PID: 2}, Err: errno, DurationNs: -1}
}

func feed(m *Metrics, recs ...tracer.Record) {
	for i := range recs {
		m.Record(&recs[i])
	}
}

func TestCounters(t *testing.T) {
	m := New(Options{})
	feed(m,
		stateRec(tracer.StateClose, tracer.StateListen, 8080, 0, -1),
		stateRec(tracer.StateSynRecv, tracer.StateEstablished, 8080, 50000, 2e6),
		stateRec(tracer.StateClose, tracer.StateSynSent, 40000, 5432, -1),
		stateRec(tracer.StateSynSent, tracer.StateEstablished, 40000, 5432, 300e3),
		stateRec(tracer.StateEstablished, tracer.StateFinWait1, 40000, 5432, 5e9),
		stateRec(tracer.StateEstablished, tracer.StateFinWait1, 8080, 50000, -1),
		failedBind(tracer.ProtoTCP, 8080, 98),
		failedBind(tracer.ProtoTCP, 8080, 98),
		failedBind(tracer.ProtoUDP, 53, 13),
		// A bind that worked is no failure.
		failedBind(tracer.ProtoTCP, 9090, 0),
	)
	const want = `
# HELP porttrace_tcp_state_transitions_total TCP state transitions, by the states left and entered.
# TYPE porttrace_tcp_state_transitions_total counter
porttrace_tcp_state_transitions_total{from="close",to="listen"} 1
porttrace_tcp_state_transitions_total{from="close",to="syn_sent"} 1
porttrace_tcp_state_transitions_total{from="established",to="fin_wait1"} 2
porttrace_tcp_state_transitions_total{from="syn_recv",to="established"} 1
porttrace_tcp_state_transitions_total{from="syn_sent",to="established"} 1
# HELP porttrace_bind_failures_total Failed bind(2) calls, by protocol, port ("other" past the labelled ports) and errno.
# TYPE porttrace_bind_failures_total counter
porttrace_bind_failures_total{errno="EACCES",port="53",proto="udp"} 1
porttrace_bind_failures_total{errno="EADDRINUSE",port="8080",proto="tcp"} 2
`
	text := scrape(t, m)
	if got := family(text, "porttrace_tcp_state_transitions_total") + family(text, "porttrace_bind_failures_total"); got != want[1:] {
		t.Errorf("scraped\n%s\nwant\n%s", got, want[1:])
	}
}

func TestHistograms(t *testing.T) {
	m := New(Options{})
	feed(m,
		stateRec(tracer.StateSynSent, tracer.StateEstablished, 40000, 5432, 300e3),
		stateRec(tracer.StateSynSent, tracer.StateEstablished, 40001, 5432, 1.5e9),
		stateRec(tracer.StateSynRecv, tracer.StateEstablished, 8080, 50000, 100e3),
		// Unseen starts are no observation.
		stateRec(tracer.StateSynRecv, tracer.StateEstablished, 8080, 50001, -1),
		stateRec(tracer.StateTimeWait, tracer.StateClose, 8080, 50000, 60e9),
	)
	for _, c := range []struct {
		name, labels string
		count        uint64
		sum          float64
	}{
		{"porttrace_tcp_handshake_duration_seconds", `side="client"`, 2, 1.5003},
		{"porttrace_tcp_handshake_duration_seconds", `side="server"`, 1, 100e-6},
		{"porttrace_tcp_state_duration_seconds", `state="syn_sent"`, 2, 1.5003},
		{"porttrace_tcp_state_duration_seconds", `state="time_wait"`, 1, 60},
		{"porttrace_tcp_state_duration_seconds", `state="established"`, 0, 0},
	} {
		count, sum := histogramOf(t, m, c.name, c.labels)
		if count != c.count || sum < c.sum*0.999999 || sum > c.sum*1.000001 {
			t.Errorf("%s{%s}: count %d sum %g, want %d and %g", c.name, c.labels, count, sum, c.count, c.sum)
		}
	}
}

// histogramOf reads a histogram's count and sum from a scrape.
func histogramOf(t *testing.T, m *Metrics, name, labels string) (count uint64, sum float64) {
	t.Helper()
	text := scrape(t, m)
	for _, line := range strings.Split(text, "\n") {
		if _, err := fmt.Sscanf(line, name+"_count{"+labels+"} %d", &count); err == nil {
			continue
		}
		fmt.Sscanf(line, name+"_sum{"+labels+"} %g", &sum)
	}
	return count, sum
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// family is a metric family's lines in a scrape: help, type and samples.
func family(text, name string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		metric, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE "), " ")
		metric, _, _ = strings.Cut(metric, "{")
		if metric == name {
			b.WriteString(line)
		}
	}
	return b.String()
}

// seededLoop publishes an index of the sockets given.
func seededLoop(sockets ...snapshot.PortSocket) *correlate.Loop {
	r := &snapshot.PortReport{Processes: map[uint32]*proc.Process{1: {Identity: proc.Identity{PID: 1}, Name: "srv"}}}
	for i := range sockets {
		sockets[i].Proto, sockets[i].Family, sockets[i].Sock = tracer.ProtoTCP, tracer.FamilyIPv4, tracer.SockID(i+1)
		sockets[i].PIDs = []uint32{1}
		r.Sockets = append(r.Sockets, sockets[i])
	}
	loop := correlate.NewLoop()
	loop.Seed(r, 1)
	loop.Tick(2)
	return loop
}

func sock(state tracer.State, local, remote string) snapshot.PortSocket {
	return snapshot.PortSocket{State: state, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
}

func TestSocketGauges(t *testing.T) {
	loop := seededLoop(
		sock(tracer.StateListen, "0.0.0.0:8080", "0.0.0.0:0"),
		sock(tracer.StateEstablished, "127.0.0.1:8080", "127.0.0.1:50000"),
		sock(tracer.StateEstablished, "127.0.0.1:8080", "127.0.0.1:50001"),
		sock(tracer.StateTimeWait, "127.0.0.1:8080", "127.0.0.1:50002"),
		// The client ends: ephemeral ports, counted as "other".
		sock(tracer.StateEstablished, "127.0.0.1:50000", "127.0.0.1:8080"),
		sock(tracer.StateEstablished, "127.0.0.1:50001", "127.0.0.1:8080"),
		sock(tracer.StateFinWait2, "127.0.0.1:50002", "127.0.0.1:8080"),
	)
	index := func() *correlate.Index { return loop.Index() }
	m := New(Options{Index: index, Lost: func() tracer.Lost { return tracer.Lost{Dropped: 7, Skipped: 2} },
		HistoryDropped: func() uint64 { return 3 }})
	want := map[string]int{
		`port="8080",state="listen"`:       1,
		`port="8080",state="established"`:  2,
		`port="8080",state="time_wait"`:    1,
		`port="other",state="established"`: 2,
		`port="other",state="fin_wait2"`:   1,
	}
	checkSockets(t, m, []string{"8080", "other"}, want)
	expectLines(t, scrape(t, m),
		`porttrace_index_sockets 7`,
		`porttrace_events_lost_total{cause="dropped"} 7`,
		`porttrace_events_lost_total{cause="skipped"} 2`,
		`porttrace_events_lost_total{cause="undecodable"} 0`,
		`porttrace_history_dropped_total 3`)

	// The listener goes: the port keeps its label, and its TIME_WAIT.
	loop = seededLoop(sock(tracer.StateTimeWait, "127.0.0.1:8080", "127.0.0.1:50002"))
	checkSockets(t, m, []string{"8080", "other"}, map[string]int{`port="8080",state="time_wait"`: 1})
}

// checkSockets compares porttrace_tcp_sockets with want: exactly the
// ports given, every state, zero where want has nothing.
func checkSockets(t *testing.T, m *Metrics, ports []string, want map[string]int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# HELP porttrace_tcp_sockets TCP sockets by state, per listening port (local port; \"other\" for every port without a label, ephemeral ones above all).\n")
	b.WriteString("# TYPE porttrace_tcp_sockets gauge\n")
	for _, port := range ports {
		for _, st := range gaugeStates {
			labels := fmt.Sprintf(`port="%s",state="%s"`, port, stateLabel(st))
			fmt.Fprintf(&b, "porttrace_tcp_sockets{%s} %d\n", labels, want[labels])
		}
	}
	if got := family(scrape(t, m), "porttrace_tcp_sockets"); got != b.String() {
		t.Errorf("scraped\n%s\nwant\n%s", got, b.String())
	}
}

func expectLines(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, "\n"+l+"\n") {
			t.Errorf("the scrape has no line %q", l)
		}
	}
}

// TestBoundedPorts: past MaxPorts, ports count as "other".
func TestBoundedPorts(t *testing.T) {
	loop := seededLoop(
		sock(tracer.StateListen, "0.0.0.0:80", "0.0.0.0:0"),
		sock(tracer.StateListen, "0.0.0.0:443", "0.0.0.0:0"),
		sock(tracer.StateListen, "0.0.0.0:8080", "0.0.0.0:0"),
	)
	m := New(Options{Index: loop.Index, MaxPorts: 2})
	// Ports get labels in the order porttrace sees them: here, the
	// scrape's, by port.
	checkSockets(t, m, []string{"80", "443", "other"}, map[string]int{
		`port="80",state="listen"`:    1,
		`port="443",state="listen"`:   1,
		`port="other",state="listen"`: 1,
	})
	feed(m, failedBind(tracer.ProtoTCP, 9999, 98))
	expectLines(t, scrape(t, m), `porttrace_bind_failures_total{errno="EADDRINUSE",port="other",proto="tcp"} 1`)
}

// TestPromtool checks a scrape, every family in it, with Prometheus's own
// parser and linter (Debian's prometheus package has it). CI must have it.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI must have promtool: apt-get install prometheus")
		}
		t.Skip("no promtool: apt-get install prometheus")
	}
	loop := seededLoop(sock(tracer.StateListen, "0.0.0.0:8080", "0.0.0.0:0"))
	m := New(Options{Index: loop.Index, Lost: func() tracer.Lost { return tracer.Lost{} }, HistoryDropped: func() uint64 { return 0 }})
	feed(m,
		stateRec(tracer.StateSynSent, tracer.StateEstablished, 40000, 5432, 300e3),
		stateRec(tracer.StateSynRecv, tracer.StateEstablished, 8080, 50000, 100e3),
		failedBind(tracer.ProtoTCP, 8080, 98))
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape(t, m))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.Bytes())
	}
}

// TestRecordAllocates nothing once each label set has been seen.
func TestRecordAllocates(t *testing.T) {
	m := New(Options{})
	recs := []tracer.Record{
		stateRec(tracer.StateClose, tracer.StateListen, 8080, 0, -1),
		stateRec(tracer.StateSynRecv, tracer.StateEstablished, 8080, 50000, 2e6),
		stateRec(tracer.StateSynSent, tracer.StateEstablished, 40000, 5432, 300e3),
		stateRec(tracer.StateEstablished, tracer.StateFinWait1, 40000, 5432, 5e9),
		failedBind(tracer.ProtoTCP, 8080, 98),
		failedBind(tracer.ProtoTCP, 50000, 98),
	}
	feed(m, recs...)
	i := 0
	if allocs := testing.AllocsPerRun(10000, func() {
		m.Record(&recs[i%len(recs)])
		i++
	}); allocs != 0 {
		t.Errorf("Record allocates %v times per record, want 0", allocs)
	}
}

// TestExposition: label values and help are escaped as the format says,
// and a value on a bucket's bound counts in that bucket.
func TestExposition(t *testing.T) {
	var e exposition
	e.family("x_total", "counter", "back\\slash and\nnewline")
	e.sample("x_total", 2, "a", `q"uote`, "b", "back\\slash\nnewline")
	h := newHistogram(1, 10, 2)
	for _, v := range []float64{0.5, 1, 10, 11} {
		h.observe(v)
	}
	e.histogram("y_seconds", h, "side", "client")
	const want = `# HELP x_total back\\slash and\nnewline
# TYPE x_total counter
x_total{a="q\"uote",b="back\\slash\nnewline"} 2
y_seconds_bucket{side="client",le="1"} 2
y_seconds_bucket{side="client",le="10"} 3
y_seconds_bucket{side="client",le="+Inf"} 4
y_seconds_sum{side="client"} 22.5
y_seconds_count{side="client"} 4
`
	if got := string(e.b); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
