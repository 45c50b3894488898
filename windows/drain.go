package windows

import (
	"time"

	"github.com/porttrace/porttrace/tracer"
)

const (
	// stopQuiet is how long a stopping source waits for the next event
	// of before the stop before it takes the queue to be drained: ETW
	// hands the buffers a flush closed to the consumer within
	// milliseconds. Without the flush, what ETW holds comes with its
	// flush timer: the source then waits deliveryLag.
	stopQuiet = 100 * time.Millisecond
	// stopDrainLimit bounds how long a stopping source reads on, under
	// traffic that never lets the queue run dry.
	stopDrainLimit = time.Second
)

// drainAtStop hands push the events of before the stop, at stopNs, that
// are queued when a watch stops or come soon after (what ETW held in its
// buffers, flushed at the stop), each through slot: until none of them
// has come for quiet, and for at most limit. Events of after the stop are
// left out, so that a busy port's keep no stop waiting, and no watch
// prints past its --duration. Without
// it, a watch stopped right after a connection closed printed none of the
// teardown that ETW had yet to deliver.
func drainAtStop(events <-chan tracer.Event, slot *tracer.Event, push func(*tracer.Event), stopNs int64, quiet, limit time.Duration) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	idle := time.NewTimer(quiet)
	defer idle.Stop()
	for {
		select {
		case *slot = <-events:
			if slot.TimeNs > stopNs {
				continue
			}
			push(slot)
			idle.Reset(quiet)
		case <-idle.C:
			return
		case <-deadline.C:
			return
		}
	}
}
