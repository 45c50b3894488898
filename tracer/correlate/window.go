package correlate

import "github.com/porttrace/porttrace/tracer"

// WindowNs is how long a Window holds a line: as long as the correlator may
// hold a passive socket's lines for the process that accepts it, so that
// those lines, released late, still take their place in time.
const WindowNs = holdTimeoutNs

// windowCapacity bounds the lines a Window holds (240 bytes each): a storm
// of more lines a second than this pushes the oldest out early, and a line
// older than those, arriving after them, is marked late.
const windowCapacity = 1 << 16

// Window is a Sink that passes records on in time order. The correlator
// emits most lines as their events arrive, but holds a passive socket's
// until it is accepted and a stopped timewait timer's until it knows how
// the socket ended; a Window holds every line until the events' clock is
// WindowNs past it, and passes them on sorted by time. A line that still
// arrives after a later one went out (held longer than the window, or
// pushed past by a storm that filled the window) goes out at once, marked
// Late.
//
// Nearly every line arrives in time order: those wait in a ring, in the
// order they came, at a constant cost each; only the lines that arrive
// after a later one (the held ones) wait in a heap. The oldest of the
// ring's first and the heap's top goes out first. A storm fills the window
// with tens of thousands of lines a second, and a heap of them all cost a
// few microseconds a line in cache misses alone.
//
// It holds copies of the records and allocates nothing per record once
// its ring and heap have grown. It runs on the loop's goroutine, as every
// sink; Flush passes on what it holds when the loop has stopped.
type Window struct {
	next     tracer.Sink
	widthNs  int64
	capacity int

	// ring holds the lines that came in time order: n of them from head.
	ring    []windowLine
	head, n int
	// heap holds the others, ordered by time and then arrival.
	heap []windowLine
	seq  uint64
	// passedNs is the time of the latest line passed on: a line older
	// than that is late.
	passedNs int64
	late     uint64
	scratch  tracer.Record
}

// windowLine is a line waiting, with its place in the order of arrival.
type windowLine struct {
	seq uint64
	r   tracer.Record
}

var _ tracer.Sink = (*Window)(nil)

// NewWindow returns a Window in front of next.
func NewWindow(next tracer.Sink) *Window {
	return newWindow(next, WindowNs, windowCapacity)
}

func newWindow(next tracer.Sink, widthNs int64, capacity int) *Window {
	return &Window{next: next, widthNs: widthNs, capacity: capacity}
}

// Record implements tracer.Sink.
func (w *Window) Record(r *tracer.Record) {
	if r.TimeNs < w.passedNs {
		w.late++
		w.scratch = *r
		w.scratch.Late = true
		w.next.Record(&w.scratch)
		return
	}
	w.seq++
	if w.n == 0 || r.TimeNs >= w.at(w.n-1).r.TimeNs {
		if w.n == len(w.ring) {
			w.grow()
		}
		l := w.at(w.n)
		l.seq, l.r = w.seq, *r
		w.n++
	} else {
		w.heap = append(w.heap, windowLine{seq: w.seq, r: *r})
		w.up(len(w.heap) - 1)
	}
	if w.n+len(w.heap) > w.capacity {
		// The oldest of all, which may be this one, goes out early.
		w.passOldest()
	}
}

// at is the ring's i-th line from its head.
func (w *Window) at(i int) *windowLine {
	if i += w.head; i >= len(w.ring) {
		i -= len(w.ring)
	}
	return &w.ring[i]
}

// grow doubles the ring, keeping its lines in order, up to one more line
// than the window holds: Record passes one on when it holds more.
func (w *Window) grow() {
	ring := make([]windowLine, min(max(64, 2*len(w.ring)), w.capacity+1))
	for i := range w.n {
		ring[i] = *w.at(i)
	}
	w.ring, w.head = ring, 0
}

// oldest is the line to pass on next, nil if none waits; fromRing says
// where it waits.
func (w *Window) oldest() (l *windowLine, fromRing bool) {
	switch {
	case w.n == 0 && len(w.heap) == 0:
		return nil, false
	case len(w.heap) == 0:
		return &w.ring[w.head], true
	case w.n == 0:
		return &w.heap[0], false
	}
	if first := &w.ring[w.head]; before(first, &w.heap[0]) {
		return first, true
	}
	return &w.heap[0], false
}

// Tick implements tracer.Sink: the lines WindowNs older than nowNs go on.
// The next deadline is when the oldest line left will be.
func (w *Window) Tick(nowNs int64) int64 {
	for {
		l, _ := w.oldest()
		if l == nil || l.r.TimeNs > nowNs-w.widthNs {
			break
		}
		w.passOldest()
	}
	next := w.next.Tick(nowNs)
	if l, _ := w.oldest(); l != nil {
		next = tracer.EarlierDeadline(next, l.r.TimeNs+w.widthNs)
	}
	return next
}

// Flush passes on every line held, as when the watch stops.
func (w *Window) Flush() {
	for w.n > 0 || len(w.heap) > 0 {
		w.passOldest()
	}
}

// Late counts the lines passed on out of time order.
func (w *Window) Late() uint64 { return w.late }

// passOldest passes the oldest line on.
func (w *Window) passOldest() {
	l, fromRing := w.oldest()
	r := &l.r
	if fromRing {
		// The slot is not reused before the next Record.
		if w.head++; w.head == len(w.ring) {
			w.head = 0
		}
		w.n--
	} else {
		w.scratch = l.r
		r = &w.scratch
		last := len(w.heap) - 1
		w.heap[0] = w.heap[last]
		w.heap = w.heap[:last]
		if last > 0 {
			w.down(0)
		}
	}
	w.passedNs = max(w.passedNs, r.TimeNs)
	w.next.Record(r)
}

// before orders lines: by time, then by arrival.
func before(a, b *windowLine) bool {
	return a.r.TimeNs < b.r.TimeNs || (a.r.TimeNs == b.r.TimeNs && a.seq < b.seq)
}

func (w *Window) up(j int) {
	for j > 0 {
		parent := (j - 1) / 2
		if !before(&w.heap[j], &w.heap[parent]) {
			return
		}
		w.heap[j], w.heap[parent] = w.heap[parent], w.heap[j]
		j = parent
	}
}

func (w *Window) down(j int) {
	n := len(w.heap)
	for {
		least := j
		if l := 2*j + 1; l < n && before(&w.heap[l], &w.heap[least]) {
			least = l
		}
		if r := 2*j + 2; r < n && before(&w.heap[r], &w.heap[least]) {
			least = r
		}
		if least == j {
			return
		}
		w.heap[j], w.heap[least] = w.heap[least], w.heap[j]
		j = least
	}
}
