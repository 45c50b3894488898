package windows

import (
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// TestDrainAtStop: a stopping source hands on what is queued and what
// comes soon after, in order, leaving out what happened after the stop;
// it ends once nothing of before the stop has come for a while, however
// much of after it keeps coming, and under events of before the stop that
// never stop, at its limit.
func TestDrainAtStop(t *testing.T) {
	events := make(chan tracer.Event, 8)
	for i := range 5 {
		events <- tracer.Event{TimeNs: int64(i)}
	}
	go func() {
		time.Sleep(20 * time.Millisecond) // ETW's flushed buffers, a little later
		for i := 5; i < 8; i++ {
			events <- tracer.Event{TimeNs: int64(i)}
			events <- tracer.Event{TimeNs: 100 + int64(i)} // after the stop
		}
	}()
	var got []int64
	var slot tracer.Event
	drainAtStop(events, &slot, func(ev *tracer.Event) { got = append(got, ev.TimeNs) }, 50, time.Second, time.Minute)
	if len(got) != 8 {
		t.Fatalf("handed on %v, want the 8 queued and flushed of before the stop", got)
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
	handed := 0
	count := func(*tracer.Event) { handed++ }
	done := make(chan struct{})
	go func() { drainAtStop(endless, &slot, count, 0, time.Hour, 50*time.Millisecond); done <- struct{}{} }()
	select {
	case <-done:
		if handed == 0 {
			t.Error("read none of an endless stream")
		}
	case <-time.After(time.Minute):
		t.Fatal("still draining an endless stream a minute after its 50 ms limit")
	}

	// A busy port's events of after the stop keep coming: the drain ends
	// once those of before have stopped, long before its limit.
	after := make(chan tracer.Event)
	go func() {
		for {
			select {
			case after <- tracer.Event{TimeNs: 100}:
			case <-stop:
				return
			}
		}
	}()
	handed = 0
	go func() { drainAtStop(after, &slot, count, 50, 10*time.Millisecond, time.Hour); done <- struct{}{} }()
	select {
	case <-done:
		if handed != 0 {
			t.Errorf("handed on %d events of after the stop", handed)
		}
	case <-time.After(time.Minute):
		t.Fatal("a busy port's events of after the stop kept the drain going a minute")
	}
}
