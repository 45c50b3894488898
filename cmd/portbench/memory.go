//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// memoryRow is one line of the memory table.
type memoryRow struct{ what, figure string }

// memorySection measures the memory of porttrace watching a port and of
// its daemon with many connections open at once (timing the
// who-owns-the-port commands meanwhile), then over a long storm each.
// bigConns and daemonBigConns are the long storms' sizes.
func (b *bench) memorySection(ctx context.Context, bigConns, daemonBigConns int) error {
	held, who, err := b.heldMemory(ctx)
	if err != nil {
		return err
	}
	storm, err := b.stormMemory(ctx, b.porttraceTracer("porttrace", false, nil), bigConns)
	if err != nil {
		return err
	}
	daemonStorm, err := b.stormMemory(ctx, b.daemonTracer("porttrace daemon", filepath.Join(b.dir, "daemon-storm")), daemonBigConns)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\n## b. porttrace's memory (porttrace --port P, text to /dev/null, and porttrace daemon, tracing every port; a fresh one for each part)\n\n")
	var rows [][]string
	for _, r := range slices.Concat(held, storm, daemonStorm) {
		rows = append(rows, []string{r.what, r.figure})
	}
	printTable(b.out, []string{"what", "figure"}, rows)
	b.printWho(who)
	return nil
}

// heldMemory: the peak resident memory of porttrace watching the port, and
// of the daemon, while holdConns connections on the port are open at
// once; the who-owns-the-port commands are timed meanwhile, and the
// daemon's who on a port with one listener before and while they are
// open.
func (b *bench) heldMemory(ctx context.Context) ([]memoryRow, []whoResult, error) {
	port, err := b.freePort()
	if err != nil {
		return nil, nil, err
	}
	b.progress("holding %d connections open on port %d under porttrace and its daemon", b.opts.holdConns, port)
	run, err := b.startTracer(ctx, b.porttraceTracer("porttrace", false, nil), port)
	if err != nil {
		return nil, nil, err
	}
	defer run.c.stop()
	daemon, err := b.startTracer(ctx, b.daemonTracer("porttrace daemon", filepath.Join(b.dir, "daemon-held")), 0)
	if err != nil {
		return nil, nil, err
	}
	defer daemon.c.stop()
	pid, daemonPID := run.c.pid(), daemon.c.pid()
	idle, err := memoryKiB(pid, "VmRSS")
	if err != nil {
		return nil, nil, err
	}
	daemonIdle, err := memoryKiB(daemonPID, "VmRSS")
	if err != nil {
		return nil, nil, err
	}
	quiet, err := b.quietListener()
	if err != nil {
		return nil, nil, err
	}
	defer quiet.Close()
	quietPort := quiet.Addr().(*net.TCPAddr).Port
	// Both have just started (their first snapshots, the daemon's
	// history): the daemon's who is timed once they are idle, as it is
	// with the connections open.
	if err := settle(pid, daemonPID); err != nil {
		return nil, nil, err
	}
	quietBefore := b.timeWhoOf(ctx, fmt.Sprintf("porttrace who (daemon), port %d with 1 listener, before", quietPort), b.daemonWho(quietPort), quietPort, []int{os.Getpid()})

	h, err := b.holdConnections(ctx, port, b.opts.holdConns)
	if err != nil {
		return nil, nil, err
	}
	defer h.release()
	if err := settle(pid, daemonPID); err != nil {
		return nil, nil, err
	}
	peak, err := memoryKiB(pid, "VmHWM")
	if err != nil {
		return nil, nil, err
	}
	daemonPeak, err := memoryKiB(daemonPID, "VmHWM")
	if err != nil {
		return nil, nil, err
	}
	daemonHeld, err := memoryKiB(daemonPID, "VmRSS")
	if err != nil {
		return nil, nil, err
	}
	who := b.timeWho(ctx, port, h.pids())
	quietDuring := b.timeWhoOf(ctx, fmt.Sprintf("porttrace who (daemon), port %d with 1 listener, %d sockets open", quietPort, 2*b.opts.holdConns), b.daemonWho(quietPort), quietPort, []int{os.Getpid()})
	who = append(who, quietBefore, quietDuring)
	if err := h.release(); err != nil {
		return nil, nil, err
	}
	if err := waitQuiet(ctx, port); err != nil {
		return nil, nil, err
	}
	res, err := run.finish(port)
	if err != nil {
		return nil, nil, err
	}
	daemonRes, err := daemon.finish(port)
	if err != nil {
		return nil, nil, err
	}
	held := fmt.Sprintf("%d connections held open at once: %d sockets on the port, %d holder processes (peak, VmHWM)", b.opts.holdConns, 2*b.opts.holdConns, len(h.procs))
	rows := []memoryRow{
		{"attached, idle (VmRSS)", mib(idle)},
		{held, mib(peak)},
		{"  events lost / skipped by kernel meanwhile", fmt.Sprintf("%d / %d", res.lost.lost, res.bpf.misses)},
		{"daemon: started, idle (VmRSS)", mib(daemonIdle)},
		{"daemon: " + held, mib(daemonPeak)},
		{"  daemon: VmRSS while they are held", mib(daemonHeld)},
		{"  events lost / skipped by kernel meanwhile (machine-wide)", fmt.Sprintf("%d / %d", daemonRes.lost.lost, daemonRes.bpf.misses)},
	}
	return rows, who, nil
}

// quietListener listens on a port of its own, which nothing connects to:
// who on it shows what the answer costs with no socket on the port.
func (b *bench) quietListener() (net.Listener, error) {
	port, err := b.freePort()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("listening on a quiet port: %w", err)
	}
	return l, nil
}

// stormMemory: the resident memory of tracer t sampled over a long storm.
// porttrace forgets a connection when it closes and a TIME_WAIT socket
// when that goes (60 s, or reused sooner), so memory follows the sockets
// alive at once, not the traffic: the samples level off.
func (b *bench) stormMemory(ctx context.Context, t tracer, conns int) ([]memoryRow, error) {
	port, err := b.freePort()
	if err != nil {
		return nil, err
	}
	b.progress("storm of %d connections on port %d under %s", conns, port, t.name)
	run, err := b.startTracer(ctx, t, port)
	if err != nil {
		return nil, err
	}
	defer run.c.stop()
	pid := run.c.pid()
	samples := sampleRSS(pid, b.opts.sampleEvery)
	start := time.Now()
	storm, err := b.storm(ctx, port, conns)
	took := time.Since(start)
	trail := samples.stop()
	if err != nil {
		return nil, err
	}
	if err := waitQuiet(ctx, port); err != nil {
		return nil, err
	}
	peak, err := memoryKiB(pid, "VmHWM")
	if err != nil {
		return nil, err
	}
	res, err := run.finish(port)
	if err != nil {
		return nil, err
	}
	prefix := ""
	if t.socket != "" {
		prefix = "daemon: "
	}
	return []memoryRow{
		{fmt.Sprintf("%sstorm of %d connections in %.0f s (%.0f conns/s): peak (VmHWM)", prefix, conns, took.Seconds(), storm.rate), mib(peak)},
		{fmt.Sprintf("  VmRSS every %v during it", b.opts.sampleEvery), trail},
		{"  events lost / skipped by kernel", fmt.Sprintf("%d / %d", res.lost.lost, res.bpf.misses)},
	}, nil
}

// rssSampler reads a process's VmRSS at intervals until stopped.
type rssSampler struct {
	done    chan struct{}
	samples chan []string
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{done: make(chan struct{}), samples: make(chan []string, 1)}
	go func() {
		var got []string
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				s.samples <- got
				return
			case <-t.C:
				if kib, err := memoryKiB(pid, "VmRSS"); err == nil {
					got = append(got, fmt.Sprintf("%.0f", float64(kib)/1024))
				}
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the samples in MiB.
func (s *rssSampler) stop() string {
	close(s.done)
	return strings.Join(<-s.samples, ", ") + " MiB"
}

func mib(kib int64) string {
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}

// settle waits for each process to go idle (see waitIdle), for at most 10 s
// each.
func settle(pids ...int) error {
	for _, p := range pids {
		if err := waitIdle(p, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}
