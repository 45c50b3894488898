package windows

import (
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// TestDrainAtStop: a stopping source hands on what is queued and what
// comes soon after, in order; it ends once nothing has come for a while,
// and under events that never stop, at its limit.
func TestDrainAtStop(t *testing.T) {
	events := make(chan tracer.Event, 8)
	for i := range 5 {
		events <- tracer.Event{TimeNs: int64(i)}
	}
	go func() {
		time.Sleep(20 * time.Millisecond) // ETW's flushed buffers, a little later
		for i := 5; i < 8; i++ {
			events <- tracer.Event{TimeNs: int64(i)}
		}
	}()
	var got []int64
	var slot tracer.Event
	n := drainAtStop(events, &slot, func(ev *tracer.Event) { got = append(got, ev.TimeNs) }, time.Second, time.Minute)
	if n != 8 || len(got) != 8 {
		t.Fatalf("handed on %d (%v), want the 8 queued and flushed", n, got)
	}
	for i, ns := range got {
		if ns != int64(i) {
			t.Fatalf("order: %v", got)
		}
	}

	endless := make(chan tracer.Event)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case endless <- tracer.Event{}:
			case <-stop:
				return
			}
		}
	}()
	done := make(chan int)
	go func() { done <- drainAtStop(endless, &slot, func(*tracer.Event) {}, time.Hour, 50*time.Millisecond) }()
	select {
	case n := <-done:
		if n == 0 {
			t.Error("read none of an endless stream")
		}
	case <-time.After(time.Minute):
		t.Fatal("still draining an endless stream a minute after its 50 ms limit")
	}
}
