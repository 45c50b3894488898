//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	// pt: this package has a type tracer of its own.
	pt "github.com/porttrace/porttrace/tracer"
)

// transitionsPerConn is what portstorm promises for each connection.
const transitionsPerConn = 10

// stormTransitions are those 10, client first (it closes first), then the
// server. The client's last is FIN_WAIT2 -> TIME_WAIT for porttrace and
// FIN_WAIT2 -> CLOSE for the kernel's tracepoint (tcpstates, bpftrace):
// either counts, as one. Anything else on the port (the listener's own
// lines, TIME_WAIT sockets reused and killed) is not part of the count.
var stormTransitions = map[[2]pt.State]bool{
	{pt.StateClose, pt.StateSynSent}: true, {pt.StateSynSent, pt.StateEstablished}: true,
	{pt.StateEstablished, pt.StateFinWait1}: true, {pt.StateFinWait1, pt.StateFinWait2}: true,
	{pt.StateFinWait2, pt.StateTimeWait}: true, {pt.StateFinWait2, pt.StateClose}: true,
	{pt.StateListen, pt.StateSynRecv}: true, {pt.StateSynRecv, pt.StateEstablished}: true,
	{pt.StateEstablished, pt.StateCloseWait}: true, {pt.StateCloseWait, pt.StateLastAck}: true,
	{pt.StateLastAck, pt.StateClose}: true,
}

// transition is what the counters need of one output line.
type transition struct {
	sport, dport int
	old, new     pt.State
}

// lineParser reads one output line; ok is false for lines that are not a
// transition (headers, banners).
type lineParser func(line string) (t transition, ok bool)

// outputCount is what a tracer's output file holds.
type outputCount struct {
	storm int    // the storm's transitions on the port
	all   int    // every line: for a tracer watching a port with no traffic, all of them are wrong
	lost  uint64 // events the tool said it lost, in lines among its output
}

// countOutput counts an output file's lines. lost, if not nil, matches the
// lines in which the tool reports events it lost, the count in its first
// group.
func countOutput(path string, port int, parse lineParser, lost *regexp.Regexp) (c outputCount, err error) {
	err = eachLine(path, func(line string) {
		// A porttrace watch with --json ends with its summary object: a
		// report of the watch, not a line of traffic.
		if strings.HasPrefix(line, "{") && strings.Contains(line, `"type":"summary"`) {
			return
		}
		c.all++
		t, ok := parse(line)
		if ok && (t.sport == port || t.dport == port) && stormTransitions[[2]pt.State{t.old, t.new}] {
			c.storm++
		}
		if lost != nil {
			if m := lost.FindStringSubmatch(line); m != nil {
				c.lost += parseUint(m[1])
			}
		}
	})
	return c, err
}

func eachLine(path string, fn func(string)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("counting lines: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		fn(s.Text())
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("counting lines in %s: %w", path, err)
	}
	return nil
}

// parsePorttraceJSON reads porttrace --json; binds have no states.
func parsePorttraceJSON(line string) (transition, bool) {
	var v struct {
		Sport, Dport int
		Old, New     *string
	}
	if json.Unmarshal([]byte(line), &v) != nil || v.Old == nil || v.New == nil {
		return transition{}, false
	}
	return parsedTransition(v.Sport, v.Dport, *v.Old, *v.New)
}

// parsedTransition is a transition between two named states; ok is false
// when either name is not a state's.
func parsedTransition(sport, dport int, old, new string) (transition, bool) {
	o, ok1 := pt.ParseState(old)
	n, ok2 := pt.ParseState(new)
	return transition{sport, dport, o, n}, ok1 && ok2
}

// parseTcpstates reads tcpstates' columns, SKADDR C-PID C-COMM LADDR LPORT
// RADDR RPORT OLDSTATE -> NEWSTATE MS, from the end: a command name may
// hold spaces.
func parseTcpstates(line string) (transition, bool) {
	f := strings.Fields(line)
	n := len(f)
	if n < 10 || f[n-3] != "->" {
		return transition{}, false
	}
	sport, err1 := strconv.Atoi(f[n-7])
	dport, err2 := strconv.Atoi(f[n-5])
	if err1 != nil || err2 != nil {
		return transition{}, false
	}
	return parsedTransition(sport, dport, f[n-4], f[n-2])
}

// parseBpftrace reads the lines of bpftraceScript: sport dport old new
// first, as numbers, the states numbered as the kernel numbers them, which
// is pt.State's numbering.
func parseBpftrace(line string) (transition, bool) {
	f := strings.Fields(line)
	if len(f) < 4 {
		return transition{}, false
	}
	var n [4]int
	for i := range n {
		v, err := strconv.Atoi(f[i])
		if err != nil {
			return transition{}, false
		}
		n[i] = v
	}
	if n[2] < 1 || n[2] >= pt.StateCount || n[3] < 1 || n[3] >= pt.StateCount {
		return transition{}, false
	}
	return transition{n[0], n[1], pt.State(n[2]), pt.State(n[3])}, true
}

// bpftraceScript prints one line per state change on port, at either end
// of the socket: the filter runs in the kernel, as porttrace's does.
func bpftraceScript(port int) string {
	return fmt.Sprintf(`tracepoint:sock:inet_sock_set_state /args->sport == %[1]d || args->dport == %[1]d/ {
	printf("%%d %%d %%d %%d %%d %%s %%s %%s\n", args->sport, args->dport, args->oldstate, args->newstate,
		pid, ntop(args->saddr), ntop(args->daddr), comm);
}`, port)
}

// lostReport is what a tool says it lost.
type lostReport struct {
	lost uint64
	// porttrace: of lost, the probe runs the kernel skipped that nothing
	// made up for, whose port is unknown; gaps, the transitions seen
	// without their predecessor.
	skipped uint64
	gaps    uint64
}

var porttraceSummary = regexp.MustCompile(`porttrace: events lost in the kernel: (\d+)[^;\n]*` +
	`(?:; probe runs the kernel skipped, of any port: (\d+)[^;\n]*)?(?:; transitions seen without their predecessor: (\d+))?`)

// porttraceLost reads the last line of porttrace's summary; its absence
// means porttrace did not end as it should.
func porttraceLost(stderr string) (lostReport, error) {
	m := porttraceSummary.FindAllStringSubmatch(stderr, -1)
	if m == nil {
		return lostReport{}, fmt.Errorf("no summary from porttrace: %s", lastLines(stderr, 3))
	}
	last := m[len(m)-1]
	skipped := parseUint(last[2])
	return lostReport{lost: parseUint(last[1]) + skipped, skipped: skipped, gaps: parseUint(last[3])}, nil
}

// sumMatches adds up the counts a tool prints on stderr as it loses
// events: tcpstates "lost N events on CPU #C", bpftrace "Lost N events".
func sumMatches(re *regexp.Regexp) func(string) (lostReport, error) {
	return func(stderr string) (lostReport, error) {
		var r lostReport
		for _, m := range re.FindAllStringSubmatch(stderr, -1) {
			r.lost += parseUint(m[1])
		}
		return r, nil
	}
}

// bpftraceLostLine is bpftrace's report of events lost: on stderr in its
// newer versions, on stdout, among the script's lines, in older ones
// (Debian 12's 0.17), so both are read.
var bpftraceLostLine = regexp.MustCompile(`(?m)^Lost (\d+) events$`)

var (
	tcpstatesLost = sumMatches(regexp.MustCompile(`lost (\d+) events on CPU`))
	bpftraceLost  = sumMatches(bpftraceLostLine)
)
