//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/history"
)

// porttraceDaemon is the daemon as it runs as a service: every port
// traced, history kept; the long storm of the memory section is sized by
// its rate too.
const porttraceDaemon = "porttrace daemon (every port)"

// daemonSocket is where the harness's daemon serves its API: its own, so
// that a daemon already running on the machine is neither asked nor
// disturbed.
func (b *bench) daemonSocket() string { return filepath.Join(b.dir, "daemon.sock") }

// daemonTracer runs this checkout's porttrace daemon with its history in
// dataDir. It prints nothing; it is attached once its API answers.
func (b *bench) daemonTracer(name, dataDir string) tracer {
	return tracer{name: name, socket: b.daemonSocket(), lost: daemonLost,
		argv: func(int, string) []string {
			return []string{b.porttrace, "daemon", "--socket", b.daemonSocket(), "--data-dir", dataDir}
		}}
}

// daemonAnswers says whether the daemon answers on socket.
func daemonAnswers(ctx context.Context, socket string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := api.Ask(ctx, socket, 1, false)
	return err == nil
}

var daemonStopped = regexp.MustCompile(`porttrace: stopped; in all, (\d+) events lost \(\d+ ring full, (\d+) runs skipped`)

// daemonLost reads the daemon's last line, which counts what it lost in
// all; its absence means the daemon did not end as it should.
func daemonLost(stderr string) (lostReport, error) {
	m := daemonStopped.FindStringSubmatch(stderr)
	if m == nil {
		return lostReport{}, fmt.Errorf("no last line from the daemon: %s", lastLines(stderr, 3))
	}
	return lostReport{lost: parseUint(m[1]), skipped: parseUint(m[2])}, nil
}

// historySection measures what the daemon's history costs per ownership
// change: listeners opened and closed one after another as fast as the
// harness can, each a holder that starts (bind, then listen) and ends
// (close) in history: two changes.
func (b *bench) historySection(ctx context.Context) error {
	n := b.opts.historyListeners
	dataDir := filepath.Join(b.dir, "history-cost")
	b.progress("opening and closing %d listeners under the daemon", n)
	run, err := b.startTracer(ctx, b.daemonTracer(porttraceDaemon, dataDir), 0)
	if err != nil {
		return err
	}
	defer run.c.stop()
	pid := run.c.pid()
	db := filepath.Join(dataDir, "history.db")
	size0 := fileSize(db)
	cpu0, err := readCPU(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	var sampled []int
	for i := range n {
		l, err := lc.Listen(ctx, "tcp4", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listening: %w", err)
		}
		if i%max(1, n/100) == 0 {
			sampled = append(sampled, l.Addr().(*net.TCPAddr).Port)
		}
		l.Close()
	}
	took := time.Since(start)
	// Idle, the daemon has handed every change to history, which commits
	// what it holds before it answers.
	if err := waitIdle(pid, 30*time.Second); err != nil {
		return err
	}
	cpu, err := readCPU(pid)
	if err != nil {
		return err
	}
	cpu = cpu.sub(cpu0)
	size := fileSize(db)
	recorded := 0
	var missing []string
	for i, port := range sampled {
		found, seen := b.historyCloses(ctx, port, start)
		if found {
			recorded++
		} else {
			missing = append(missing, fmt.Sprintf("listener %d on port %d: %s", i*max(1, n/100), port, seen))
		}
	}
	dropped, err := b.historyDropped(ctx)
	if err != nil {
		return err
	}
	res, err := run.finish(0)
	if err != nil {
		return err
	}
	changes := 2 * n
	fmt.Fprintf(b.out, "\n## d. History: what the daemon pays per ownership change (%d listeners opened and closed, one after another: %d changes)\n\n", n, changes)
	printTable(b.out, []string{"what", "figure"}, [][]string{
		{"listeners opened and closed", fmt.Sprintf("%.0f/s (%d in %.1f s)", float64(n)/took.Seconds(), n, took.Seconds())},
		{"daemon CPU per ownership change (user+system, events and history)", fmt.Sprintf("%.1f us", float64(cpu.total().Microseconds())/float64(changes))},
		{"history file growth per ownership change", fmt.Sprintf("%.0f bytes (%s, grown in steps)", float64(size-size0)/float64(changes), mib(size/1024))},
		{"sampled listeners found in history, closed, with their owner", fmt.Sprintf("%d of %d", recorded, len(sampled))},
		{"changes history dropped (its writer behind the storm of listeners)", fmt.Sprintf("%d of about %d", dropped, 3*n)},
		{"events lost / skipped by kernel", fmt.Sprintf("%d / %d", res.lost.lost, res.bpf.misses)},
	})
	if len(missing) > 0 {
		// What history had instead tells a missed event from a misdated
		// or misattributed one.
		fmt.Fprintf(b.out, "sampled listeners missing from history (times from the first listener's start):\n  %s\n", strings.Join(missing, "\n  "))
	}
	if recorded < len(sampled) && res.lost.lost == 0 && dropped == 0 {
		b.problem("history: %d of %d sampled listeners missing, with no event lost and no change dropped", len(sampled)-recorded, len(sampled))
	}
	return nil
}

// historyDropped is how many changes the daemon's history dropped since it
// started, as its answers say.
func (b *bench) historyDropped(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := api.History(ctx, b.daemonSocket(), 1, time.Time{}, time.Time{})
	if err != nil {
		return 0, fmt.Errorf("asking the daemon's history: %w", err)
	}
	return res.Dropped, nil
}

// historyCloses says whether the daemon's history has the harness's
// listener on port, since start, and its close; if not, what it has of
// the port.
func (b *bench) historyCloses(ctx context.Context, port int, start time.Time) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := api.History(ctx, b.daemonSocket(), uint16(port), start, time.Time{})
	if err != nil {
		return false, err.Error()
	}
	if closedBy(res, os.Getpid()) {
		return true, ""
	}
	// Asked again with no time bound: a holder dated before start is
	// one the daemon's clock put there.
	if all, err := api.History(ctx, b.daemonSocket(), uint16(port), time.Time{}, time.Time{}); err == nil {
		res = all
	}
	return false, describeHolders(res.Holders, start)
}

// describeHolders says what history holds of a port, in one line.
func describeHolders(holders []history.Holder, start time.Time) string {
	if len(holders) == 0 {
		return "no holder"
	}
	rel := func(ns int64) string {
		if ns == 0 {
			return "-"
		}
		return time.Duration(ns - start.UnixNano()).String()
	}
	var out []string
	for _, h := range holders {
		out = append(out, fmt.Sprintf("pid %d via %s from %s listen %s until %s end %q",
			h.Owner.PID, h.Via, rel(h.FromNs), rel(h.ListenNs), rel(h.UntilNs), h.End))
	}
	return strings.Join(out, "; ")
}

// closedBy says whether history has a listener of pid's that closed.
func closedBy(res *history.Result, pid int) bool {
	for _, h := range res.Holders {
		if int(h.Owner.PID) == pid && h.End == history.EndClosed && h.ListenNs != 0 {
			return true
		}
	}
	return false
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
