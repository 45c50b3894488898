//go:build linux

package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pt "github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/render"
)

// The storm's connection in these samples: client port 52438 to the
// storm's port 24556.
const (
	samplePort   = 24556
	sampleClient = 52438
)

// tcpstatesSample is what libbpf-tools' tcpstates (0.26, Debian 12)
// printed for one portstorm connection: the listener, then its 10
// transitions.
const tcpstatesSample = `SKADDR           PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> NEWSTATE    MS
ffff8881207ab780 23951   pb-portsto 127.0.0.1       24556 0.0.0.0         0     CLOSE       -> LISTEN      0.000
ffff8881207ac0c0 23951   pb-portsto 127.0.0.1       0     127.0.0.1       24556 CLOSE       -> SYN_SENT    0.000
ffff8881207ac0c0 23951   pb-portsto 127.0.0.1       52438 127.0.0.1       24556 SYN_SENT    -> ESTABLISHED 0.079
ffff8881207a8000 23951   pb-portsto 127.0.0.1       24556 127.0.0.1       52438 LISTEN      -> SYN_RECV    0.000
ffff8881207a8000 23951   pb-portsto 127.0.0.1       24556 127.0.0.1       52438 SYN_RECV    -> ESTABLISHED 0.016
ffff8881207ac0c0 23951   pb-portsto 127.0.0.1       52438 127.0.0.1       24556 ESTABLISHED -> FIN_WAIT1   0.216
ffff8881207a8000 23951   pb-portsto 127.0.0.1       24556 127.0.0.1       52438 ESTABLISHED -> CLOSE_WAIT  0.204
ffff8881207a8000 23951   pb-portsto 127.0.0.1       24556 127.0.0.1       52438 CLOSE_WAIT  -> LAST_ACK    0.042
ffff8881207ac0c0 23951   pb-portsto 127.0.0.1       52438 127.0.0.1       24556 FIN_WAIT1   -> FIN_WAIT2   0.086
ffff8881207ac0c0 23951   pb-portsto 127.0.0.1       52438 127.0.0.1       24556 FIN_WAIT2   -> CLOSE       0.014
ffff8881207a8000 23951   pb-portsto 127.0.0.1       24556 127.0.0.1       52438 LAST_ACK    -> CLOSE       0.054
`

// bpftraceSample is what bpftrace 0.17 (Debian 12) printed on stdout for
// bpftraceScript(24556) with a small perf buffer: its banner, the
// script's lines and, among them, its reports of lost events.
const bpftraceSample = `Attaching 1 probe...
24556 0 7 10 22463 127.0.0.1 0.0.0.0 pb-portstorm
0 24556 7 2 22463 127.0.0.1 127.0.0.1 pb-portstorm
52438 24556 2 1 22463 127.0.0.1 127.0.0.1 pb-portstorm
24556 52438 10 3 22463 127.0.0.1 127.0.0.1 pb-portstorm
24556 52438 3 1 22463 127.0.0.1 127.0.0.1 pb-portstorm
Lost 47 events
52438 24556 1 4 22463 127.0.0.1 127.0.0.1 pb-portstorm
24556 52438 1 8 22463 127.0.0.1 127.0.0.1 pb-portstorm
24556 52438 8 9 22463 127.0.0.1 127.0.0.1 pb-portstorm
52438 24556 4 5 22463 127.0.0.1 127.0.0.1 pb-portstorm
Lost 217 events
52438 24556 5 7 22463 127.0.0.1 127.0.0.1 pb-portstorm
24556 52438 9 7 22463 127.0.0.1 127.0.0.1 pb-portstorm
`

// porttraceJSONSample is porttrace --json for the same connection, written
// by porttrace's own formatter, with the lines around it that are not
// the storm's: a bind, a socket seen at start, the listener, the client's
// TIME_WAIT ending, and another port's connection.
func porttraceJSONSample() string {
	lo := netip.MustParseAddr("127.0.0.1")
	rec := func(typ pt.RecordType, sport, dport uint16, old, new pt.State) pt.Record {
		return pt.Record{TimeNs: time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC).UnixNano(), Type: typ,
			Proto: pt.ProtoTCP, Family: pt.FamilyIPv4, SAddr: lo, SPort: sport, DAddr: lo, DPort: dport,
			Old: old, New: new, Process: pt.Process{PID: 23951, Comm: pt.CommFrom("portstorm")}, OwnerVia: pt.OwnerConnect, DurationNs: 12_000}
	}
	state := func(sport, dport uint16, old, new pt.State) pt.Record {
		return rec(pt.RecordState, sport, dport, old, new)
	}
	records := []pt.Record{
		rec(pt.RecordBind, samplePort, 0, 0, 0),
		rec(pt.RecordSocket, 22, 41000, 0, pt.StateEstablished),
		rec(pt.RecordListen, samplePort, 0, pt.StateClose, pt.StateListen),
		state(sampleClient, samplePort, pt.StateClose, pt.StateSynSent),
		state(samplePort, sampleClient, pt.StateListen, pt.StateSynRecv),
		state(samplePort, sampleClient, pt.StateSynRecv, pt.StateEstablished),
		state(sampleClient, samplePort, pt.StateSynSent, pt.StateEstablished),
		state(sampleClient, samplePort, pt.StateEstablished, pt.StateFinWait1),
		state(samplePort, sampleClient, pt.StateEstablished, pt.StateCloseWait),
		state(sampleClient, samplePort, pt.StateFinWait1, pt.StateFinWait2),
		state(samplePort, sampleClient, pt.StateCloseWait, pt.StateLastAck),
		state(sampleClient, samplePort, pt.StateFinWait2, pt.StateTimeWait),
		state(samplePort, sampleClient, pt.StateLastAck, pt.StateClose),
		state(sampleClient, samplePort, pt.StateTimeWait, pt.StateClose),
		state(40000, 8080, pt.StateClose, pt.StateSynSent),
	}
	var b []byte
	for i := range records {
		b = render.AppendJSON(b, &records[i], nil)
	}
	return string(b)
}

func TestLineParsers(t *testing.T) {
	json := strings.Split(porttraceJSONSample(), "\n")
	tcpstates := strings.Split(tcpstatesSample, "\n")
	bpftrace := strings.Split(bpftraceSample, "\n")
	tr := func(sport, dport int, old, new pt.State) transition { return transition{sport, dport, old, new} }
	for _, tc := range []struct {
		name   string
		parse  lineParser
		line   string
		want   transition
		wantOK bool
	}{
		{"json bind", parsePorttraceJSON, json[0], transition{}, false},
		{"json socket at start", parsePorttraceJSON, json[1], transition{}, false},
		{"json listen", parsePorttraceJSON, json[2], tr(samplePort, 0, pt.StateClose, pt.StateListen), true},
		{"json connect", parsePorttraceJSON, json[3], tr(sampleClient, samplePort, pt.StateClose, pt.StateSynSent), true},
		{"json into TIME_WAIT", parsePorttraceJSON, json[11], tr(sampleClient, samplePort, pt.StateFinWait2, pt.StateTimeWait), true},
		{"json unknown state", parsePorttraceJSON, strings.Replace(json[3], `"SYN_SENT"`, `"SYN_SENT2"`, 1), transition{}, false},
		{"json not JSON", parsePorttraceJSON, "porttrace: watching port 24556", transition{}, false},

		{"tcpstates header", parseTcpstates, tcpstates[0], transition{}, false},
		{"tcpstates listen", parseTcpstates, tcpstates[1], tr(samplePort, 0, pt.StateClose, pt.StateListen), true},
		{"tcpstates connect", parseTcpstates, tcpstates[2], tr(0, samplePort, pt.StateClose, pt.StateSynSent), true},
		{"tcpstates server close", parseTcpstates, tcpstates[11], tr(samplePort, sampleClient, pt.StateLastAck, pt.StateClose), true},
		{"tcpstates command with spaces", parseTcpstates,
			"ffff8881207ac0c0 4711    Web Conten 10.0.0.2        41000 10.0.0.1        443   ESTABLISHED -> FIN_WAIT1   1.250",
			tr(41000, 443, pt.StateEstablished, pt.StateFinWait1), true},
		{"tcpstates lost", parseTcpstates, "lost 12 events on CPU #1", transition{}, false},
		{"tcpstates empty", parseTcpstates, "", transition{}, false},

		{"bpftrace banner", parseBpftrace, bpftrace[0], transition{}, false},
		{"bpftrace listen", parseBpftrace, bpftrace[1], tr(samplePort, 0, pt.StateClose, pt.StateListen), true},
		{"bpftrace syn", parseBpftrace, bpftrace[4], tr(samplePort, sampleClient, pt.StateListen, pt.StateSynRecv), true},
		{"bpftrace lost", parseBpftrace, bpftrace[6], transition{}, false},
		{"bpftrace client close", parseBpftrace, bpftrace[12], tr(sampleClient, samplePort, pt.StateFinWait2, pt.StateClose), true},
		{"bpftrace state 0", parseBpftrace, "52438 24556 0 1 22463 127.0.0.1 127.0.0.1 x", transition{}, false},
		{"bpftrace state 13", parseBpftrace, "52438 24556 1 13 22463 127.0.0.1 127.0.0.1 x", transition{}, false},
		{"bpftrace NEW_SYN_RECV", parseBpftrace, "24556 52438 10 12 0 127.0.0.1 127.0.0.1 swapper/0", tr(samplePort, sampleClient, pt.StateListen, pt.StateNewSynRecv), true},
	} {
		got, ok := tc.parse(tc.line)
		if ok != tc.wantOK || (ok && got != tc.want) {
			t.Errorf("%s: %q: got %+v, %v; want %+v, %v", tc.name, tc.line, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestCountOutput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		output string
		parse  lineParser
		lost   *regexp.Regexp
		port   int
		want   outputCount
	}{
		// Every sample holds one connection's 10 transitions, besides
		// lines that are not the storm's.
		{"porttrace JSON", porttraceJSONSample(), parsePorttraceJSON, nil, samplePort, outputCount{storm: 10, all: 15}},
		{"porttrace JSON, another port", porttraceJSONSample(), parsePorttraceJSON, nil, 8080, outputCount{storm: 1, all: 15}},
		{"porttrace JSON, a quiet port", porttraceJSONSample(), parsePorttraceJSON, nil, 9, outputCount{storm: 0, all: 15}},
		{"tcpstates", tcpstatesSample, parseTcpstates, nil, samplePort, outputCount{storm: 10, all: 12}},
		{"bpftrace", bpftraceSample, parseBpftrace, bpftraceLostLine, samplePort, outputCount{storm: 10, all: 14, lost: 264}},
		{"bpftrace, lost not looked for", bpftraceSample, parseBpftrace, nil, samplePort, outputCount{storm: 10, all: 14}},
		{"empty", "", parseBpftrace, bpftraceLostLine, samplePort, outputCount{}},
	} {
		path := filepath.Join(dir, "out")
		if err := os.WriteFile(path, []byte(tc.output), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := countOutput(path, tc.port, tc.parse, tc.lost)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	if _, err := countOutput(filepath.Join(dir, "missing"), samplePort, parseBpftrace, nil); err == nil {
		t.Error("counting a missing file: no error")
	}
}

// summary is porttrace's stderr at the end of a watch, written by the
// product's own render.WriteSummary, so that a change of its format breaks
// this test rather than the benchmark's lost column.
func summary(stats correlate.Stats, lost pt.Lost, dropped uint64) string {
	var b bytes.Buffer
	render.WriteSummary(&b, &render.Summary{Stats: stats, Lost: lost, Dropped: dropped, Elapsed: 1234 * time.Millisecond})
	return b.String()
}

func TestPorttraceLost(t *testing.T) {
	stats := correlate.Stats{Events: 200013, Records: 200010, Opened: 40000, Closed: 40000}
	stats.Transitions[pt.StateEstablished] = 40000
	stats.Transitions[pt.StateTimeWait] = 20000
	withGaps := stats
	withGaps.Gaps = 17
	for _, tc := range []struct {
		name   string
		stderr string
		want   lostReport
	}{
		{"nothing lost", summary(stats, pt.Lost{}, 0), lostReport{}},
		{"lost, every cause", summary(stats, pt.Lost{Dropped: 300, Skipped: 40, Undecodable: 2}, 0), lostReport{lost: 342, skipped: 40}},
		{"skipped only", summary(stats, pt.Lost{Skipped: 440}, 0), lostReport{lost: 440, skipped: 440}},
		{"gaps", summary(withGaps, pt.Lost{Skipped: 5}, 0), lostReport{lost: 5, skipped: 5, gaps: 17}},
		{"lines not written after it", summary(withGaps, pt.Lost{Dropped: 9}, 1200), lostReport{lost: 9, gaps: 17}},
		{"warnings while it ran, then the summary",
			"porttrace: " + render.DescribeLost(pt.Lost{Skipped: 3}) + "\n" +
				"porttrace: " + render.DescribeLost(pt.Lost{Dropped: 100, Skipped: 3}) + "\n" +
				summary(withGaps, pt.Lost{Dropped: 100, Skipped: 8}, 0),
			lostReport{lost: 108, skipped: 8, gaps: 17}},
	} {
		got, err := porttraceLost(tc.stderr)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v\nstderr:\n%s", tc.name, got, err, tc.want, tc.stderr)
		}
	}
	if _, err := porttraceLost("porttrace: needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8): run with sudo\n"); err == nil {
		t.Error("stderr without a summary: no error")
	}
}

func TestPeersLost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lost   func(string) (lostReport, error)
		stderr string
		want   uint64
	}{
		{"tcpstates, none", tcpstatesLost, "", 0},
		// libbpf-tools' handle_lost_events, once per perf buffer report.
		{"tcpstates", tcpstatesLost, "lost 12 events on CPU #0\nlost 3 events on CPU #1\nlost 100 events on CPU #0\n", 115},
		{"bpftrace, none", bpftraceLost, "ERROR: Unknown error -1: couldn't set RLIMIT_MEMLOCK for bpftrace. If your program is not loading, you can try \"ulimit -l 8192\" to fix the problem\n", 0},
		// Newer bpftrace versions print it on stderr.
		{"bpftrace", bpftraceLost, "Attached 1 probe\nLost 47 events\nLost 217 events\n", 264},
	} {
		got, err := tc.lost(tc.stderr)
		if err != nil || got != (lostReport{lost: tc.want}) {
			t.Errorf("%s: got %+v, %v; want lost %d", tc.name, got, err, tc.want)
		}
	}
}

// TestCountSkipsTheSummary: a --json watch's last line is its summary
// object, which is no line of traffic: a watch of a quiet port printed none.
func TestCountSkipsTheSummary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.json")
	if err := os.WriteFile(path, render.AppendSummaryJSON(nil, &render.Summary{}), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := countOutput(path, 9, parsePorttraceJSON, nil)
	if err != nil || c.all != 0 {
		t.Errorf("counted %+v, %v; want no line", c, err)
	}
}
