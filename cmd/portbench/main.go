//go:build linux

// Command portbench measures porttrace beside its peers on this machine,
// in one run: the connection rate a loopback storm keeps under each tracer
// (porttrace's daemon, tracing every port, among them) and how much of the
// storm each one printed or lost; the memory of porttrace and its daemon
// with many connections open at once and over a long storm; how long each
// tool takes to say who owns a port, porttrace's daemon included; what the
// daemon's history costs per ownership change; and the Go benchmarks.
//
// It needs root: the tracers load and attach eBPF programs (CAP_BPF,
// CAP_PERFMON); mounting tracefs for the peers and enabling the kernel's
// BPF run-time statistics need CAP_SYS_ADMIN; missing peers are installed
// with apt-get.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == holdCommand {
		if err := runHolder(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "portbench hold: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "portbench: %v\n", err)
		os.Exit(1)
	}
}

// options size the run.
type options struct {
	quick       bool
	rounds      int
	conns       int
	workers     int
	holdConns   int
	bigConns    int
	bigFor      time.Duration
	sampleEvery time.Duration
	whoRepeats  int
	basePort    int
	// historyListeners are opened and closed to measure history's cost.
	historyListeners int
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := pflag.NewFlagSet("portbench", pflag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", false, "CI smoke run: small counts, one round, well under a minute; fails only when something is broken, never on timings")
	fs.IntVar(&o.rounds, "rounds", 11, "rounds of the storm comparison (every contender once per round)")
	fs.IntVar(&o.conns, "conns", 20000, "connections per storm")
	fs.IntVar(&o.workers, "workers", 4, "portstorm's concurrent clients")
	fs.IntVar(&o.holdConns, "hold-conns", 20000, "connections held open at once for the memory measurement")
	fs.IntVar(&o.bigConns, "big-conns", 1000000, "connections of the long storm, at most")
	fs.DurationVar(&o.bigFor, "big-for", 2*time.Minute, "the long storm is cut to what fits in about this long")
	fs.DurationVar(&o.sampleEvery, "sample-every", 10*time.Second, "interval of memory samples during the long storm")
	fs.IntVar(&o.whoRepeats, "who-repeats", 5, "times each who-owns-the-port command is timed")
	fs.IntVar(&o.basePort, "base-port", 24000, "first loopback port to use (below the ephemeral range)")
	fs.IntVar(&o.historyListeners, "history-listeners", 20000, "listeners opened and closed under the daemon to measure history's cost per ownership change")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.quick {
		quick := map[string]string{"rounds": "1", "conns": "2000", "hold-conns": "2000", "big-conns": "20000", "sample-every": "1s", "who-repeats": "1", "history-listeners": "2000"}
		for name, value := range quick {
			if !fs.Changed(name) {
				fs.Set(name, value)
			}
		}
	}
	if o.rounds < 1 || o.conns < 1 || o.workers < 1 || o.holdConns < 1 || o.bigConns < 1 || o.whoRepeats < 1 || o.historyListeners < 1 || o.bigFor <= 0 || o.sampleEvery <= 0 {
		return o, errors.New("counts and durations must be positive")
	}
	return o, nil
}

func run(ctx context.Context, args []string) error {
	opts, err := parseOptions(args)
	if err != nil {
		return err
	}
	b, err := newBench(ctx, opts, os.Stdout)
	if err != nil {
		return err
	}
	defer b.close()
	start := time.Now()
	b.describeMachine(ctx)
	tallies, err := b.stormSection(ctx)
	if err != nil {
		return err
	}
	if err := b.memorySection(ctx, b.bigStormSize(tallies, porttraceText), b.bigStormSize(tallies, porttraceDaemon)); err != nil {
		b.problem("memory: %v", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.goBenchmarks(ctx)
	if err := b.historySection(ctx); err != nil {
		b.problem("history: %v", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(b.out, "\nload average at end: %s; the benchmark took %.0f s\n", loadAverage(), time.Since(start).Seconds())
	if len(b.problems) > 0 {
		return fmt.Errorf("%d problem(s): %s", len(b.problems), strings.Join(b.problems, "; "))
	}
	return nil
}

// bigStormSize fits a long storm in about --big-for at the rate the
// contender named allowed in the comparison, in whole thousands.
func (b *bench) bigStormSize(tallies []*tally, name string) int {
	rate := 0.0
	for _, t := range tallies {
		if t.name == name && len(t.rates) > 0 {
			rate = median(t.rates)
		}
	}
	n := min(b.opts.bigConns, int(rate*b.opts.bigFor.Seconds())/1000*1000)
	return max(n, b.opts.conns)
}
