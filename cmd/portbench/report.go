//go:build linux

package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// printTable aligns rows under a header, columns two spaces apart.
func printTable(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range append([][]string{header}, rows...) {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratioCell is the median ratio to the untraced storm, with its range over
// the rounds: the spread is the machine's noise.
func ratioCell(ratios []float64) string {
	if len(ratios) == 1 {
		return fmt.Sprintf("%.2f", ratios[0])
	}
	return fmt.Sprintf("%.2f (%.2f-%.2f)", median(ratios), slices.Min(ratios), slices.Max(ratios))
}

func (b *bench) printStorm(ports stormPorts, tallies []*tally) {
	fmt.Fprintf(b.out, "\n## a. Tracing overhead and loss: portstorm --port %d --conns %d --workers %d, %d round(s), contenders alternated round-robin\n\n",
		ports.storm, b.opts.conns, b.opts.workers, b.opts.rounds)
	header := []string{"contender", "conns/s (median)", "vs no tracer (min-max)", "lines/due", "missing", "lost (tool says)", "skipped by kernel", "tracer CPU us/conn"}
	var rows [][]string
	for _, t := range tallies {
		rows = append(rows, t.row())
	}
	for _, name := range []string{"tcpstates", "bpftrace"} {
		if why, ok := b.skipped[name]; ok {
			rows = append(rows, []string{name, "skipped: " + why})
		}
	}
	printTable(b.out, header, rows)
	fmt.Fprintf(b.out, `
lines/due: the storm's transitions printed for port %d (10 per connection: FIN_WAIT2->TIME_WAIT
  and FIN_WAIT2->CLOSE both count) over connections x 10; the other-port row counts every line it
  printed (watching port %d, which had no traffic: 0 due).
lost (tool says): porttrace's summary, tcpstates' "lost N events on CPU #C", bpftrace's "Lost N events"
  (on stderr, or among its output lines, where bpftrace 0.17 prints them).
skipped by kernel: recursion_misses of the tool's eBPF programs (/proc/PID/fdinfo): runs the kernel
  did not make because the program was already running on that CPU. No tool reports these.
tracer CPU: the tracer process's utime+stime from attached to drained (/proc/PID/stat).
`, ports.storm, ports.other)
	for _, t := range tallies {
		if t.lost.gaps > 0 {
			fmt.Fprintf(b.out, "%s: transitions seen without their predecessor (its summary): %d\n", t.name, t.lost.gaps)
		}
	}
}

func (t *tally) row() []string {
	if len(t.rates) == 0 {
		return []string{t.name, "failed: " + oneLine(t.err)}
	}
	row := []string{t.name, fmt.Sprintf("%.0f", median(t.rates)), ratioCell(t.ratios)}
	if t.none {
		return append(row, "-", "-", "-", "-", "-")
	}
	row = append(row, t.linesCell(), t.missingCell(), fmt.Sprint(t.lost.lost), fmt.Sprint(t.bpf.misses), perConn(t.cpu.total(), t.conns))
	if t.err != nil {
		row = append(row, "(later failed: "+oneLine(t.err)+")")
	}
	return row
}

func (t *tally) linesCell() string {
	switch {
	case t.socket != "":
		return "- (prints none)"
	case !t.counted:
		return "- (/dev/null)"
	case t.otherPort:
		return fmt.Sprintf("%d/0", t.all)
	}
	return fmt.Sprintf("%d/%d", t.lines, t.expected)
}

func (t *tally) missingCell() string {
	if !t.counted || t.otherPort {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(t.expected-t.lines)/float64(t.expected))
}

// perConn is d in microseconds per storm connection.
func perConn(d time.Duration, conns int) string {
	return fmt.Sprintf("%.1f", float64(d.Nanoseconds())/1e3/float64(conns))
}

// programBreakdown lists each program's share of the BPF time.
func programBreakdown(s bpfStats, conns int) string {
	names := slices.SortedFunc(maps.Keys(s.byName), func(a, b string) int {
		return cmp.Compare(s.byName[b].time, s.byName[a].time)
	})
	var parts []string
	for _, name := range names {
		c := s.byName[name]
		if c.runs == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f/%s/%s", name, float64(c.runs)/float64(conns), nsPerRun(c), perConn(c.time, conns)))
	}
	return strings.Join(parts, ", ")
}

func nsPerRun(s progCounters) string {
	if s.runs == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(s.time.Nanoseconds())/float64(s.runs))
}

func oneLine(err error) string {
	return strings.ReplaceAll(fmt.Sprint(err), "\n", " / ")
}

// printProfile shows where a tracer's cost goes: into the storm's own CPU
// time (the eBPF programs run in its system calls and softirqs), and into
// the tracer process, user or system time, and how often it is woken.
func (b *bench) printProfile(tallies []*tally) {
	fmt.Fprintf(b.out, "\n## Where the time goes: one more round, with the kernel's BPF statistics on (kernel.bpf_stats_enabled);\n")
	fmt.Fprintf(b.out, "## one run each, so its rates are noisier than table a's: read its costs per connection\n\n")
	header := []string{"contender", "conns/s", "vs no tracer", "portstorm CPUs busy", "BPF runs/conn", "BPF ns/run", "BPF us/conn", "tracer user us/conn", "tracer sys us/conn", "tracer wakeups/conn"}
	var rows [][]string
	for _, t := range tallies {
		if len(t.rates) == 0 {
			rows = append(rows, []string{t.name, "failed: " + oneLine(t.err)})
			continue
		}
		busy := t.stormCPU.total().Seconds() / float64(t.conns) * t.rates[0]
		row := []string{t.name, fmt.Sprintf("%.0f", t.rates[0]), fmt.Sprintf("%.2f", t.ratios[0]), fmt.Sprintf("%.2f", busy)}
		if t.none {
			rows = append(rows, append(row, "-", "-", "-", "-", "-", "-"))
			continue
		}
		rows = append(rows, append(row, fmt.Sprintf("%.1f", float64(t.bpf.runs)/float64(t.conns)), nsPerRun(t.bpf.progCounters), perConn(t.bpf.time, t.conns),
			perConn(t.cpu.user, t.conns), perConn(t.cpu.sys, t.conns), fmt.Sprintf("%.2f", float64(t.wakeups)/float64(t.conns))))
	}
	printTable(b.out, header, rows)
	fmt.Fprintln(b.out, "\nBPF programs (runs/conn, ns/run, us/conn), costliest first:")
	for _, t := range tallies {
		if !t.none && len(t.rates) > 0 {
			fmt.Fprintf(b.out, "  %s: %s\n", t.name, programBreakdown(t.bpf, t.conns))
		}
	}
	fmt.Fprintf(b.out, `
portstorm CPUs busy: its utime+stime over its run time (both ends of every connection, softirqs
  mostly included); beside it the tracer's own CPU competes for the machine's cores.
BPF: run count and time of the tool's eBPF programs (/proc/PID/fdinfo), spent in the storm's
  system calls and softirqs.
tracer wakeups: voluntary context switches of the tracer's threads (/proc/PID/task/*/status).
`)
}

// printTargets compares porttrace with the goals its README sets. Missing
// one is a finding, not a failure: timings never fail the run.
func (b *bench) printTargets(tallies []*tally) {
	fmt.Fprintf(b.out, "\nTargets (median ratio over rounds):\n")
	for _, t := range tallies {
		if t.peer || t.none || len(t.ratios) == 0 {
			continue
		}
		ratio := median(t.ratios)
		// porttrace's lost count is the events of the watched port that
		// found its ring buffer full (or did not decode), and the runs the
		// kernel skipped that its second programs did not make up for.
		ringFull := t.lost.lost - t.lost.skipped
		if t.socket != "" {
			// The daemon: every port's events kept; a skipped run nothing
			// made up for is counted, and repaired by a fresh snapshot.
			fmt.Fprintf(b.out, "  %-32s rate %.2f (goal >= 0.90: %s); ring buffer full %d (goal 0: %s); skipped runs not made up for %d, repaired (of %d the kernel skipped)\n",
				t.name, ratio, verdict(ratio >= 0.90), ringFull, verdict(ringFull == 0), t.lost.skipped, t.bpf.misses)
			continue
		}
		if t.otherPort {
			// Runs skipped there were of events the filter drops anyway.
			fmt.Fprintf(b.out, "  %-32s rate %.2f (goal >= 0.95: %s); lines %d, ring buffer full %d (goal 0: %s)\n",
				t.name, ratio, verdict(ratio >= 0.95), t.all, ringFull, verdict(t.all == 0 && ringFull == 0))
			continue
		}
		fmt.Fprintf(b.out, "  %-32s rate %.2f (goal >= 0.95: %s); lost %d: ring buffer full %d, skipped runs not made up for %d (of %d the kernel skipped)",
			t.name, ratio, verdict(ratio >= 0.95), t.lost.lost, ringFull, t.lost.skipped, t.bpf.misses)
		if t.counted {
			missing := float64(t.expected-t.lines) / float64(t.expected)
			fmt.Fprintf(b.out, "; missing %.4f%% (goal < 0.001%%: %s)", 100*missing, verdict(missing < 0.00001))
		}
		fmt.Fprintln(b.out)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
