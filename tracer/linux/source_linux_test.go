package linux

import (
	"github.com/porttrace/porttrace/tracer"

	"context"
	"sync"
	"testing"
	"time"
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
// ticks it only after events, never on a timer, and ticks it at the
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

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
