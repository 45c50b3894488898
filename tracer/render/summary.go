package render

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
)

// DescribeLost says how many events the kernel lost and why, with what to
// do about the loss porttrace can prevent.
func DescribeLost(l tracer.Lost) string {
	s := fmt.Sprintf("events lost in the kernel: %d", l.OfWatchedPorts())
	if l.Dropped > 0 {
		s += fmt.Sprintf(" (%d found the ring buffer full: raise --buffer-size)", l.Dropped)
	}
	if l.Undecodable > 0 {
		s += fmt.Sprintf(" (%d records did not decode: please report this)", l.Undecodable)
	}
	if l.Skipped > 0 {
		s += fmt.Sprintf("; probe runs the kernel skipped, of any port: %d (a softirq interrupted a run on the same CPU, and the kernel does not say for which port)", l.Skipped)
	}
	return s
}

// DescribeDropped says how many lines the printer could not write.
func DescribeDropped(n uint64) string {
	return fmt.Sprintf("lines not written: %d (the output could not keep up: is its reader still reading?)", n)
}

// Summary is what a watch says when it ends.
type Summary struct {
	// EndNs is when the watch ended, and Elapsed how long it ran.
	EndNs   int64
	Elapsed time.Duration
	// Stats are the correlator's: every event, whatever was shown.
	Stats correlate.Stats
	// Shown counts the lines shown, Hidden the lines the filters kept
	// out, Late those that came out of time order.
	Shown  correlate.Counts
	Hidden uint64
	Late   uint64
	// Unfollowed counts the connections --connections could not follow.
	Unfollowed uint64
	Lost       tracer.Lost
	// Dropped counts the lines the output could not take.
	Dropped uint64
}

// WriteSummary writes the closing summary of a watch as text: what was
// shown, what was left out and why, how many events the kernel lost, and
// how many lines were not written.
func WriteSummary(w io.Writer, s *Summary) {
	n := &s.Shown
	fmt.Fprintf(w, "porttrace: %d events, %d lines in %s", s.Stats.Events, n.Lines, s.Elapsed.Round(time.Millisecond))
	if s.Hidden > 0 {
		fmt.Fprintf(w, " (%d more left out by the filters)", s.Hidden)
	}
	fmt.Fprintf(w, "; connections opened %d, closed %d; sockets opened %d, closed %d; binds %d (%d failed)\n",
		n.ConnectionsOpened, n.ConnectionsClosed, n.SocketsOpened, n.SocketsClosed, n.Binds, n.BindErrors)
	if n.ConnectsFailed > 0 {
		fmt.Fprintf(w, "porttrace: connects that failed: %d (%d refused, %d timed out, %d given up by their process or for another error)\n",
			n.ConnectsFailed, n.Refused, n.TimedOut, n.ConnectsFailed-n.Refused-n.TimedOut)
	}
	var parts []string
	for st := tracer.State(1); st < tracer.StateCount; st++ {
		if c := n.Transitions[st]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, c))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "porttrace: transitions into: %s\n", strings.Join(parts, ", "))
	}
	if s.Late > 0 {
		fmt.Fprintf(w, "porttrace: lines out of time order: %d (marked late: held back longer than %s)\n", s.Late, time.Duration(correlate.HoldNs))
	}
	if s.Unfollowed > 0 {
		fmt.Fprintf(w, "porttrace: connections not followed: %d (too many open at once)\n", s.Unfollowed)
	}
	if s.Stats.Handovers > 0 || s.Stats.HolderErrors > 0 {
		fmt.Fprintf(w, "porttrace: sockets that changed hands: %d", s.Stats.Handovers)
		if s.Stats.HolderErrors > 0 {
			fmt.Fprintf(w, " (%d searches for the holders of an exited owner's sockets failed: those stay charged to it)", s.Stats.HolderErrors)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "porttrace: %s", DescribeLost(s.Lost))
	if s.Stats.Gaps > 0 {
		fmt.Fprintf(w, "; transitions seen without their predecessor: %d", s.Stats.Gaps)
	}
	fmt.Fprintln(w)
	if s.Dropped > 0 {
		fmt.Fprintf(w, "porttrace: %s\n", DescribeDropped(s.Dropped))
	}
}

// AppendSummaryJSON appends the summary as one JSON object of type
// "summary" and a newline: the last line of a watch with --json. The
// fields are a documented contract (README).
func AppendSummaryJSON(b []byte, s *Summary) []byte {
	n := &s.Shown
	b = append(b, `{"time":"`...)
	b = appendJSONTime(b, s.EndNs)
	b = append(b, `","type":"summary"`...)
	for _, f := range []struct {
		name  string
		value uint64
	}{
		{"elapsed_ns", uint64(s.Elapsed)},
		{"events", s.Stats.Events},
		{"lines", n.Lines},
		{"lines_filtered", s.Hidden},
		{"lines_late", s.Late},
		{"lines_dropped", s.Dropped},
		{"connections_opened", n.ConnectionsOpened},
		{"connections_closed", n.ConnectionsClosed},
		{"connections_unfollowed", s.Unfollowed},
		{"sockets_opened", n.SocketsOpened},
		{"sockets_closed", n.SocketsClosed},
		{"binds", n.Binds},
		{"binds_failed", n.BindErrors},
		{"connects_failed", n.ConnectsFailed},
		{"connects_refused", n.Refused},
		{"connects_timed_out", n.TimedOut},
		{"handovers", s.Stats.Handovers},
		{"holder_errors", s.Stats.HolderErrors},
		{"gaps", s.Stats.Gaps},
		{"lost_dropped", s.Lost.Dropped},
		{"lost_skipped", s.Lost.Skipped},
		{"lost_undecodable", s.Lost.Undecodable},
	} {
		b = append(b, `,"`...)
		b = append(b, f.name...)
		b = append(b, `":`...)
		b = strconv.AppendUint(b, f.value, 10)
	}
	b = append(b, `,"transitions":{`...)
	sep := ""
	for st := tracer.State(1); st < tracer.StateCount; st++ {
		if c := n.Transitions[st]; c > 0 {
			b = append(b, sep...)
			b = append(b, '"')
			b = append(b, st.String()...)
			b = append(b, `":`...)
			b = strconv.AppendUint(b, c, 10)
			sep = ","
		}
	}
	return append(b, "}}\n"...)
}
