package linux

import (
	"github.com/porttrace/porttrace/tracer"

	"context"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

// tickCounter is a handler that tells why it was ticked: after events,
// at the deadline it asked for, or for nothing (idleTicks), which an idle
// source must never do.
type tickCounter struct {
	mu         sync.Mutex
	events     int // since the last tick
	deadlineNs int64
	ticks      int
	idleTicks  int
	deadlines  int // ticks at a deadline
	stateSeen  bool
}

func (h *tickCounter) Handle(ev *tracer.Event) {
	h.mu.Lock()
	h.events++
	h.stateSeen = h.stateSeen || ev.Kind == tracer.KindState
	h.mu.Unlock()
}

func (h *tickCounter) Tick(nowNs int64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ticks++
	switch {
	case h.ticks == 1:
		// Run's first read ticks whatever it finds.
	case h.deadlineNs != tracer.NoDeadline && nowNs >= h.deadlineNs:
		h.deadlines++
		h.deadlineNs = tracer.NoDeadline
	case h.events == 0:
		h.idleTicks++
	}
	h.events = 0
	return h.deadlineNs
}

func (h *tickCounter) ask(deadlineNs int64) {
	h.mu.Lock()
	h.deadlineNs = deadlineNs
	h.mu.Unlock()
}

func (h *tickCounter) state() (ticks, idle, deadlines int, stateSeen bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ticks, h.idleTicks, h.deadlines, h.stateSeen
}

// TestKernelIdleSourceSleeps: a source whose handler names no deadline
// ticks it once as it starts, and then only after events, never on a timer, and ticks it at the
// deadline it names; an event after a quiet spell is delivered and ticked
// at once, without waiting for a deadline.
func TestKernelIdleSourceSleeps(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	src, err := Open(tracer.Config{Ports: tracer.Ports{port}})
	if err != nil {
		t.Fatal(err)
	}
	h := &tickCounter{}
	runUntilCleanup(t, src, func(ctx context.Context) error { return src.Run(ctx, h) })

	// Quiet: only other processes' exits, which every watch sees, may
	// wake it.
	time.Sleep(300 * time.Millisecond)
	if _, idle, _, _ := h.state(); idle > 0 {
		t.Fatalf("ticked %d times with no event and no deadline", idle)
	}

	h.ask(src.nowNs() + int64(50*time.Millisecond))
	// The source learns of the deadline on its next tick: an event
	// brings it.
	loopbackTraffic(t, port)
	waitUntil(t, "a tick at the deadline", func() bool { _, _, d, _ := h.state(); return d == 1 })
	ticks, idle, _, stateSeen := h.state()
	if idle > 0 || !stateSeen {
		t.Fatalf("after %d ticks: %d with no event and no deadline; traffic seen: %v", ticks, idle, stateSeen)
	}
}

// TestKernelWakeTicksIdleSource: a source asleep on its ring buffer, with
// no event and no deadline coming, ticks its handler at once when woken:
// a reconcile handed to the loop from another goroutine is not held until
// the next event.
func TestKernelWakeTicksIdleSource(t *testing.T) {
	needPrivileges(t)
	src, err := Open(tracer.Config{Ports: tracer.Ports{freePort(t, "127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	h := &tickCounter{}
	runUntilCleanup(t, src, func(ctx context.Context) error { return src.Run(ctx, h) })
	time.Sleep(300 * time.Millisecond)
	for range 3 {
		before, _, _, _ := h.state()
		src.Wake()
		waitUntil(t, "a tick after Wake", func() bool { ticks, _, _, _ := h.state(); return ticks > before })
	}
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestKernelRescueProtocol runs a hook's two programs by hand (the kernel's
// test run, on one CPU): the second acts, and counts a rescue, only while
// the first is marked under way on its CPU, which is what the kernel's
// skipping a nested run of the first looks like; the first clears its
// mark when it ends.
func TestKernelRescueProtocol(t *testing.T) {
	needPrivileges(t)
	first, second := bpf.PorttraceProgStateRawTp, bpf.PorttraceProgStateRawTpRescue
	coll := loadPrograms(t, first, second)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	// A state change CLOSE -> SYN_SENT of no socket: the handler drops it
	// after the marks are read.
	args := []uint64{0, uint64(tracer.StateClose), uint64(tracer.StateSynSent)}
	run := func(prog string, cpu int) {
		t.Helper()
		if _, err := coll.Programs[prog].Run(&ebpf.RunOptions{Context: args, CPU: uint32(cpu), Flags: unix.BPF_F_TEST_RUN_ON_CPU}); err != nil {
			t.Fatalf("running %s on CPU %d: %v", prog, cpu, err)
		}
	}
	rescued := func() uint64 { return sumRescued(t, coll) }
	marks := func() []bpf.PorttraceRunning {
		t.Helper()
		var perCPU []bpf.PorttraceRunning
		if err := coll.Maps[bpf.PorttraceMapRunning].Lookup(uint32(0), &perCPU); err != nil {
			t.Fatal(err)
		}
		return perCPU
	}

	run(first, 0)
	run(second, 0)
	if n := rescued(); n != 0 {
		t.Fatalf("the second program rescued %d runs after the first ran and ended", n)
	}
	// The first under way on CPU 0, as when a softirq interrupts it there.
	underWay := make([]bpf.PorttraceRunning, cpus)
	underWay[0].First[bpf.PorttraceRescuedHookHOOK_STATE] = 1
	if err := coll.Maps[bpf.PorttraceMapRunning].Put(uint32(0), underWay); err != nil {
		t.Fatal(err)
	}
	run(second, 0)
	if n := rescued(); n != 1 {
		t.Fatalf("the second program rescued %d runs while the first was under way, want 1", n)
	}
	if cpus > 1 {
		run(second, 1)
		if n := rescued(); n != 1 {
			t.Fatalf("the second program rescued a run on another CPU than the first's (%d in all)", n)
		}
	}
	run(first, 0)
	if m := marks(); m[0].First[bpf.PorttraceRescuedHookHOOK_STATE] != 0 {
		t.Fatalf("the first program left its mark after it ended: %v", m[0].First)
	}
	run(second, 0)
	if n := rescued(); n != 1 {
		t.Fatalf("the second program rescued %d runs, want still 1", n)
	}
}

// sumRescued is the runs the second programs made up for, on every CPU.
func sumRescued(t *testing.T, coll *ebpf.Collection) uint64 {
	t.Helper()
	var perCPU []uint64
	if err := coll.Maps[bpf.PorttraceMapRescued].Lookup(uint32(0), &perCPU); err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum
}
