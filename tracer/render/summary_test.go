package render

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"

	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// summaryCases are the summaries of watches that saw nothing, a busy
// loopback, losses of each kind, filters, late lines, handovers.
func summaryCases() []struct {
	name string
	s    Summary
} {
	end := time.Date(2026, 11, 24, 3, 20, 0, 0, time.UTC).UnixNano()
	const elapsed = 12*time.Second + 345_678_901*time.Nanosecond
	shown := correlate.Counts{Lines: 1200, SocketsOpened: 300, SocketsClosed: 296, ConnectionsOpened: 150, ConnectionsClosed: 148, Binds: 4, BindErrors: 1}
	shown.Transitions[tracer.StateEstablished] = 300
	shown.Transitions[tracer.StateSynRecv] = 150
	shown.Transitions[tracer.StateSynSent] = 153
	shown.Transitions[tracer.StateFinWait1] = 150
	shown.Transitions[tracer.StateFinWait2] = 150
	shown.Transitions[tracer.StateTimeWait] = 148
	shown.Transitions[tracer.StateCloseWait] = 148
	shown.Transitions[tracer.StateLastAck] = 148
	shown.Transitions[tracer.StateClose] = 299
	shown.Transitions[tracer.StateListen] = 2
	busy := Summary{EndNs: end, Elapsed: elapsed, Stats: correlate.Stats{Events: 1234, Records: 1200}, Shown: shown}
	with := func(edit func(s *Summary)) Summary { s := busy; edit(&s); return s }
	return []struct {
		name string
		s    Summary
	}{
		{"nothing seen, nothing lost", Summary{EndNs: end}},
		{"nothing lost", busy},
		{"connects that failed", with(func(s *Summary) { s.Shown.ConnectsFailed, s.Shown.Refused, s.Shown.TimedOut = 7, 4, 2 })},
		{"lines the filters left out", with(func(s *Summary) { s.Hidden = 20345 })},
		{"lines out of time order", with(func(s *Summary) { s.Late = 3 })},
		{"connections not followed", with(func(s *Summary) { s.Unfollowed = 12 })},
		{"ring buffer full", with(func(s *Summary) { s.Lost = tracer.Lost{Dropped: 57} })},
		{"probe runs skipped", with(func(s *Summary) { s.Lost = tracer.Lost{Skipped: 3} })},
		{"records that did not decode", with(func(s *Summary) { s.Lost = tracer.Lost{Undecodable: 1} })},
		{"every kind of loss, with gaps", with(func(s *Summary) {
			s.Lost, s.Stats.Gaps, s.Elapsed = tracer.Lost{Dropped: 1000, Skipped: 20, Undecodable: 2}, 17, time.Hour+2*time.Minute+3*time.Second+4_400_000
		})},
		{"gaps without loss (sockets older than the watch)", with(func(s *Summary) { s.Stats.Gaps = 17 })},
		{"output lines not written", with(func(s *Summary) { s.Dropped = 812 })},
		{"sockets that changed hands", with(func(s *Summary) { s.Stats.Exits, s.Stats.Handovers = 40, 3 })},
		{"a search for holders that failed", with(func(s *Summary) { s.Stats.Exits, s.Stats.Handovers, s.Stats.HolderErrors = 40, 3, 1 })},
		{"everything at once", with(func(s *Summary) {
			s.Lost, s.Stats.Gaps, s.Dropped, s.Elapsed = tracer.Lost{Dropped: 5, Skipped: 6, Undecodable: 7}, 17, 8, 999_999*time.Nanosecond
			s.Hidden, s.Late, s.Unfollowed, s.Stats.Handovers, s.Shown.ConnectsFailed, s.Shown.Refused = 9, 10, 11, 12, 13, 13
		})},
	}
}

func TestSummaryGolden(t *testing.T) {
	var out []byte
	for _, tc := range summaryCases() {
		var b bytes.Buffer
		WriteSummary(&b, &tc.s)
		out = fmt.Appendf(out, "=== %s\n%s\n", tc.name, b.Bytes())
	}
	golden(t, "summary.txt", out)
}

func TestSummaryJSONGolden(t *testing.T) {
	var out []byte
	for _, tc := range summaryCases() {
		line := AppendSummaryJSON(nil, &tc.s)
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: not JSON: %v\n%s", tc.name, err, line)
		}
		if m["type"] != "summary" {
			t.Errorf("%s: type %v", tc.name, m["type"])
		}
		out = append(out, line...)
	}
	golden(t, "summary.json", out)
}
