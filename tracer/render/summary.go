package render

import (
	"fmt"
	"io"
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

// WriteSummary writes the closing summary of a watch: what was seen, how
// many events the kernel lost, and how many lines were not written.
func WriteSummary(w io.Writer, s correlate.Stats, lost tracer.Lost, dropped uint64, elapsed time.Duration) {
	fmt.Fprintf(w, "porttrace: %d events, %d lines in %s; connections opened %d, closed %d; binds %d (%d failed)\n",
		s.Events, s.Records, elapsed.Round(time.Millisecond), s.Opened, s.Closed, s.Binds, s.BindErrors)
	var parts []string
	for st := tracer.State(1); st < tracer.StateCount; st++ {
		if n := s.Transitions[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, n))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "porttrace: transitions into: %s\n", strings.Join(parts, ", "))
	}
	if s.Handovers > 0 || s.HolderErrors > 0 {
		fmt.Fprintf(w, "porttrace: sockets that changed hands: %d", s.Handovers)
		if s.HolderErrors > 0 {
			fmt.Fprintf(w, " (%d searches for the holders of an exited owner's sockets failed: those stay charged to it)", s.HolderErrors)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "porttrace: %s", DescribeLost(lost))
	if s.Gaps > 0 {
		fmt.Fprintf(w, "; transitions seen without their predecessor: %d", s.Gaps)
	}
	fmt.Fprintln(w)
	if dropped > 0 {
		fmt.Fprintf(w, "porttrace: %s\n", DescribeDropped(dropped))
	}
}
