//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// readyTimeout bounds a tracer's start: bpftrace compiles its script first.
const readyTimeout = 30 * time.Second

// tracer is one way of watching a port: a command line and how to read
// what it printed.
type tracer struct {
	name string
	// argv is the command watching port; ready is the file porttrace
	// writes once attached.
	argv func(port int, ready string) []string
	// readyFile: the tool writes --ready-file; socket: it is porttrace's
	// daemon, ready once its API answers there. Otherwise the harness
	// waits for its eBPF programs to run.
	readyFile bool
	socket    string
	// parse reads its output lines; nil when the output goes to /dev/null.
	parse lineParser
	// lost reads what it says on stderr of events it lost; outputLost
	// matches such reports among its output lines, for a tool that prints
	// them there.
	lost       func(stderr string) (lostReport, error)
	outputLost *regexp.Regexp
	peer       bool // not porttrace: its failure is reported, not a problem
}

// tracerRun is a tracer started for one measurement.
type tracerRun struct {
	t     tracer
	c     *child
	out   string // output file; "" for /dev/null
	cpu0  cpuTimes
	wake0 uint64
}

// tracerResult is what one run of a tracer shows.
type tracerResult struct {
	lines   int // storm transitions printed; -1 when not counted
	all     int // every line printed
	lost    lostReport
	bpf     bpfStats
	cpu     cpuTimes // the tracer process's, from attached to drained
	wakeups uint64   // likewise
}

// startTracer starts t watching port and returns once it is attached.
func (b *bench) startTracer(ctx context.Context, t tracer, port int) (*tracerRun, error) {
	if t.peer {
		if err := b.ensureTracefs(); err != nil {
			return nil, err
		}
	}
	run := &tracerRun{t: t}
	ready := filepath.Join(b.dir, "ready")
	os.Remove(ready)
	argv := t.argv(port, ready)
	cmd := exec.Command(argv[0], argv[1:]...)
	if t.parse != nil {
		run.out = filepath.Join(b.dir, "out")
		f, err := os.Create(run.out)
		if err != nil {
			return nil, fmt.Errorf("creating output file: %w", err)
		}
		defer f.Close() // the child has its own descriptor
		cmd.Stdout = f
	}
	c, err := startChild(t.name, cmd)
	if err != nil {
		return nil, err
	}
	run.c = c
	if err := b.waitReady(ctx, run, ready); err != nil {
		c.stop()
		return nil, err
	}
	if run.cpu0, err = readCPU(c.pid()); err == nil {
		run.wake0, err = wakeups(c.pid())
	}
	if err != nil {
		c.stop()
		return nil, err
	}
	return run, nil
}

// waitReady polls until the tracer is attached, fails, or takes too long.
func (b *bench) waitReady(ctx context.Context, run *tracerRun, ready string) error {
	if !run.t.readyFile && run.t.socket == "" {
		// Run counts, which tell that a peer is attached, are kept only
		// while BPF statistics are on.
		stats, err := enableStats()
		if err != nil {
			return err
		}
		defer stats.Close()
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		if ok, err := b.attached(run, ready); ok || err != nil {
			return err
		}
		if done, err := run.c.exited(); done {
			if err == nil {
				err = fmt.Errorf("%s: exited: %s", run.t.name, lastLines(run.c.stderr.String(), 3))
			}
			return fmt.Errorf("not attached: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not attached after %v", run.t.name, readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// attached: porttrace says so with its ready file, the daemon by
// answering. The peers do not say:
// their programs have run once a canary connection fired them (the port
// filter runs inside the program, after the kernel counted the run).
func (b *bench) attached(run *tracerRun, ready string) (bool, error) {
	if run.t.readyFile {
		_, err := os.Stat(ready)
		return err == nil, nil
	}
	if run.t.socket != "" {
		return daemonAnswers(context.Background(), run.t.socket), nil
	}
	if err := b.canaryConnection(); err != nil {
		return false, err
	}
	stats, err := progStats(run.c.pid())
	return err == nil && stats.runs > 0, nil
}

func (b *bench) canaryConnection() error {
	c, err := net.Dial("tcp4", b.canary.Addr().String())
	if err != nil {
		return fmt.Errorf("canary connection: %w", err)
	}
	return c.Close()
}

// finish waits for the tracer to drain, reads its counters, stops it and
// counts what it printed for the storm on port.
func (run *tracerRun) finish(port int) (tracerResult, error) {
	pid := run.c.pid()
	if err := waitIdle(pid, 5*time.Second); err != nil {
		return tracerResult{}, err
	}
	var r tracerResult
	var err error
	if r.bpf, err = progStats(pid); err != nil {
		return r, err
	}
	cpu, err := readCPU(pid)
	if err != nil {
		return r, err
	}
	r.cpu = cpu.sub(run.cpu0)
	wake, err := wakeups(pid)
	if err != nil {
		return r, err
	}
	r.wakeups = wake - run.wake0
	if err := run.c.stop(); err != nil {
		return r, err
	}
	if r.lost, err = run.t.lost(run.c.stderr.String()); err != nil {
		return r, err
	}
	return r, run.count(port, &r)
}

// count reads the output file, then removes it: JSON of a long storm is
// large.
func (run *tracerRun) count(port int, r *tracerResult) error {
	r.lines = -1
	if run.out == "" {
		return nil
	}
	defer os.Remove(run.out)
	c, err := countOutput(run.out, port, run.t.parse, run.t.outputLost)
	r.lines, r.all = c.storm, c.all
	r.lost.lost += c.lost
	return err
}

// stormResult is one portstorm run.
type stormResult struct {
	rate float64
	cpu  cpuTimes // portstorm's own: the eBPF programs run in it
}

// storm runs portstorm on port.
func (b *bench) storm(ctx context.Context, port, conns int) (stormResult, error) {
	cmd := exec.CommandContext(ctx, b.portstorm, "--port", strconv.Itoa(port),
		"--conns", strconv.Itoa(conns), "--workers", strconv.Itoa(b.opts.workers))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return stormResult{}, fmt.Errorf("portstorm: %w: %s", err, lastLines(string(out), 2))
	}
	n, secs, err := parseStormOutput(string(out))
	if err != nil {
		return stormResult{}, err
	}
	return stormResult{
		rate: float64(n) / secs,
		cpu:  cpuTimes{cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime()},
	}, nil
}

// parseStormOutput reads portstorm's one line, connections=N seconds=S
// rate=R transitions=T: the rate is recomputed from N and S, which are
// exact.
func parseStormOutput(out string) (conns int, secs float64, err error) {
	if _, err := fmt.Sscanf(out, "connections=%d seconds=%g", &conns, &secs); err != nil {
		return 0, 0, fmt.Errorf("reading portstorm's output %q: %w", strings.TrimSpace(out), err)
	}
	if conns <= 0 || secs <= 0 {
		return 0, 0, fmt.Errorf("reading portstorm's output %q: no connections, or no time", strings.TrimSpace(out))
	}
	return conns, secs, nil
}

// waitQuiet returns once no socket on port is still closing: the server's
// close lags the client's, so stopping a tracer right after the storm
// would cut off the last transitions. It gives up after a few seconds.
func waitQuiet(ctx context.Context, port int) error {
	filter := fmt.Sprintf("( sport = :%d or dport = :%d )", port, port)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, err := exec.CommandContext(ctx, "ss", "-Htan", "state", "syn-sent", "state", "syn-recv",
			"state", "fin-wait-1", "state", "fin-wait-2", "state", "close-wait", "state", "last-ack",
			"state", "closing", filter).Output()
		if err != nil {
			return fmt.Errorf("ss: %w", err)
		}
		if len(strings.TrimSpace(string(out))) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
