package tracer

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Printer writes records as text or JSON lines. It is the Handler a live
// watch runs: events go to its correlator, and every tick flushes the
// output so that lines appear as soon as the source runs dry.
type Printer struct {
	Correlator *Correlator

	// mu lets the owner cache read the correlator while events flow.
	mu sync.Mutex

	w     *bufio.Writer
	json  bool
	color bool
	pid   uint32
	loc   *time.Location
	buf   []byte
}

// PrinterOptions shape a Printer's output.
type PrinterOptions struct {
	JSON  bool
	Color bool
	// PID, when not 0, keeps only the lines of sockets this process owns.
	PID uint32
	// Location is the time zone of text lines; nil means local time.
	Location *time.Location
}

// NewPrinter returns a Printer writing to w, with its own correlator.
func NewPrinter(w io.Writer, opts PrinterOptions) *Printer {
	p := &Printer{
		w:     bufio.NewWriterSize(w, 64<<10),
		json:  opts.JSON,
		color: opts.Color,
		pid:   opts.PID,
		loc:   opts.Location,
		buf:   make([]byte, 0, 512),
	}
	if p.loc == nil {
		p.loc = time.Local
	}
	p.Correlator = NewCorrelator(p.print)
	return p
}

// Header writes the column titles of the text format.
func (p *Printer) Header() {
	if !p.json {
		p.w.WriteString(TextHeader())
		p.w.WriteByte('\n')
		p.w.Flush()
	}
}

func (p *Printer) print(r *Record) {
	if p.pid != 0 && r.PID != p.pid {
		return
	}
	if p.json {
		p.buf = AppendJSON(p.buf[:0], r)
	} else {
		p.buf = AppendText(p.buf[:0], r, p.loc, p.color)
	}
	p.w.Write(p.buf)
}

// Handle implements Handler.
func (p *Printer) Handle(ev *Event) {
	p.mu.Lock()
	p.Correlator.Handle(ev)
	p.mu.Unlock()
}

// Tick implements Handler.
func (p *Printer) Tick(nowNs int64) {
	p.mu.Lock()
	p.Correlator.Tick(nowNs)
	p.mu.Unlock()
	p.w.Flush()
}

// Close releases what the correlator still holds and flushes the output.
func (p *Printer) Close() error {
	p.Correlator.Flush()
	return p.w.Flush()
}

// DescribeLost says how many events the kernel lost and why, with what to
// do about the loss porttrace can prevent.
func DescribeLost(l Lost) string {
	s := fmt.Sprintf("events lost in the kernel: %d", l.Total())
	if l.Dropped > 0 {
		s += fmt.Sprintf(" (%d found the ring buffer full: raise --buffer-size)", l.Dropped)
	}
	if l.Skipped > 0 {
		s += fmt.Sprintf(" (%d probe runs skipped by the kernel while one ran on the same CPU, for any port)", l.Skipped)
	}
	if l.Undecodable > 0 {
		s += fmt.Sprintf(" (%d records did not decode: please report this)", l.Undecodable)
	}
	return s
}

// WriteSummary writes the closing summary of a watch: what was seen, and
// how many events the kernel lost.
func WriteSummary(w io.Writer, s Stats, lost Lost, elapsed time.Duration) {
	fmt.Fprintf(w, "porttrace: %d events, %d lines in %s; connections opened %d, closed %d; binds %d (%d failed)\n",
		s.Events, s.Records, elapsed.Round(time.Millisecond), s.Opened, s.Closed, s.Binds, s.BindErrors)
	var parts []string
	for st := State(1); st < stateCount; st++ {
		if n := s.Transitions[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, n))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "porttrace: transitions into: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "porttrace: %s", DescribeLost(lost))
	if s.Gaps > 0 {
		fmt.Fprintf(w, "; transitions seen without their predecessor: %d", s.Gaps)
	}
	fmt.Fprintln(w)
}
