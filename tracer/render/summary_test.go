package render

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"

	"bytes"
	"fmt"
	"testing"
	"time"
)

func TestSummaryGolden(t *testing.T) {
	// A watch that saw a few connections through.
	busy := correlate.Stats{Events: 1234, Records: 1200, Opened: 300, Closed: 296, Binds: 4, BindErrors: 1}
	busy.Transitions[tracer.StateEstablished] = 300
	busy.Transitions[tracer.StateSynRecv] = 302
	busy.Transitions[tracer.StateFinWait1] = 150
	busy.Transitions[tracer.StateFinWait2] = 150
	busy.Transitions[tracer.StateTimeWait] = 296
	busy.Transitions[tracer.StateCloseWait] = 146
	busy.Transitions[tracer.StateLastAck] = 146
	busy.Transitions[tracer.StateClose] = 442
	busy.Transitions[tracer.StateListen] = 2
	withGaps := busy
	withGaps.Gaps = 17
	handovers := busy
	handovers.Exits, handovers.Handovers = 40, 3
	failedSearch := handovers
	failedSearch.HolderErrors = 1

	var out []byte
	const elapsed = 12*time.Second + 345_678_901*time.Nanosecond
	for _, tc := range []struct {
		name    string
		stats   correlate.Stats
		lost    tracer.Lost
		dropped uint64
		elapsed time.Duration
	}{
		{"nothing seen, nothing lost", correlate.Stats{}, tracer.Lost{}, 0, 0},
		{"nothing lost", busy, tracer.Lost{}, 0, elapsed},
		{"ring buffer full", busy, tracer.Lost{Dropped: 57}, 0, elapsed},
		{"probe runs skipped", busy, tracer.Lost{Skipped: 3}, 0, elapsed},
		{"records that did not decode", busy, tracer.Lost{Undecodable: 1}, 0, elapsed},
		{"every kind of loss, with gaps", withGaps, tracer.Lost{Dropped: 1000, Skipped: 20, Undecodable: 2}, 0, time.Hour + 2*time.Minute + 3*time.Second + 4_400_000},
		{"gaps without loss (sockets older than the watch)", withGaps, tracer.Lost{}, 0, elapsed},
		{"output lines not written", busy, tracer.Lost{}, 812, elapsed},
		{"sockets that changed hands", handovers, tracer.Lost{}, 0, elapsed},
		{"a search for holders that failed", failedSearch, tracer.Lost{}, 0, elapsed},
		{"everything at once", withGaps, tracer.Lost{Dropped: 5, Skipped: 6, Undecodable: 7}, 8, 999_999 * time.Nanosecond},
	} {
		var b bytes.Buffer
		WriteSummary(&b, tc.stats, tc.lost, tc.dropped, tc.elapsed)
		out = fmt.Appendf(out, "=== %s\n%s\n", tc.name, b.Bytes())
	}
	golden(t, "summary.txt", out)
}
