package windows

import (
	"time"

	"github.com/porttrace/porttrace/tracer"
)

const (
	// stopQuiet is how long a stopping source waits for the next event
	// before it takes the queue to be drained: ETW hands the buffers a
	// flush closed to the consumer within milliseconds.
	stopQuiet = 100 * time.Millisecond
	// stopDrainLimit bounds how long a stopping source reads on, under
	// traffic that never lets the queue run dry.
	stopDrainLimit = time.Second
)

// drainAtStop hands push the events queued when a watch stops, and those
// that come after them while they keep coming (what ETW held in its
// buffers, flushed at the stop), each through slot: until none has come
// for quiet, and for at most limit. It returns how many it handed on.
// Without it, a watch stopped right after a connection closed printed
// none of the teardown that ETW had yet to deliver.
func drainAtStop(events <-chan tracer.Event, slot *tracer.Event, push func(*tracer.Event), quiet, limit time.Duration) int {
	n := 0
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	idle := time.NewTimer(quiet)
	defer idle.Stop()
	for {
		select {
		case *slot = <-events:
			push(slot)
			n++
			idle.Reset(quiet)
		case <-idle.C:
			return n
		case <-deadline.C:
			return n
		}
	}
}
