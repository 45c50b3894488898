//go:build linux

package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// memoryRow is one line of the memory table.
type memoryRow struct{ what, figure string }

// memorySection measures porttrace's memory with many connections open at
// once (timing the who-owns-the-port commands meanwhile), then over a long
// storm. bigConns is the long storm's size.
func (b *bench) memorySection(ctx context.Context, bigConns int) error {
	held, who, err := b.heldMemory(ctx)
	if err != nil {
		return err
	}
	storm, err := b.stormMemory(ctx, bigConns)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\n## b. porttrace's memory (porttrace --port P, text to /dev/null; a fresh porttrace for each part)\n\n")
	var rows [][]string
	for _, r := range append(held, storm...) {
		rows = append(rows, []string{r.what, r.figure})
	}
	printTable(b.out, []string{"what", "figure"}, rows)
	b.printWho(who)
	return nil
}

// heldMemory: porttrace's peak resident memory while holdConns
// connections on its port are open at once, and what it keeps after they
// close.
func (b *bench) heldMemory(ctx context.Context) ([]memoryRow, []whoResult, error) {
	port, err := b.freePort()
	if err != nil {
		return nil, nil, err
	}
	b.progress("holding %d connections open on port %d under porttrace", b.opts.holdConns, port)
	run, err := b.startTracer(ctx, b.porttraceTracer("porttrace", false, nil), port)
	if err != nil {
		return nil, nil, err
	}
	defer run.c.stop()
	pid := run.c.pid()
	idle, err := memoryKiB(pid, "VmRSS")
	if err != nil {
		return nil, nil, err
	}
	h, err := b.holdConnections(ctx, port, b.opts.holdConns)
	if err != nil {
		return nil, nil, err
	}
	defer h.release()
	if err := waitIdle(pid, 10*time.Second); err != nil {
		return nil, nil, err
	}
	peak, err := memoryKiB(pid, "VmHWM")
	if err != nil {
		return nil, nil, err
	}
	who := b.timeWho(ctx, port, h.pids())
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
	rows := []memoryRow{
		{"attached, idle (VmRSS)", mib(idle)},
		{fmt.Sprintf("%d connections held open at once: %d sockets on the port, %d holder processes (peak, VmHWM)", b.opts.holdConns, 2*b.opts.holdConns, len(h.procs)), mib(peak)},
		{"  events lost / skipped by kernel meanwhile", fmt.Sprintf("%d / %d", res.lost.lost, res.bpf.misses)},
	}
	return rows, who, nil
}

// stormMemory: porttrace's resident memory sampled over a long storm. It
// forgets a connection when it closes and a TIME_WAIT socket when that
// goes (60 s, or reused sooner), so memory follows the sockets alive at
// once, not the traffic: the samples level off.
func (b *bench) stormMemory(ctx context.Context, conns int) ([]memoryRow, error) {
	port, err := b.freePort()
	if err != nil {
		return nil, err
	}
	b.progress("storm of %d connections on port %d under porttrace", conns, port)
	run, err := b.startTracer(ctx, b.porttraceTracer("porttrace", false, nil), port)
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
	return []memoryRow{
		{fmt.Sprintf("storm of %d connections in %.0f s (%.0f conns/s): peak (VmHWM)", conns, took.Seconds(), storm.rate), mib(peak)},
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
