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
// It holds copies of the records in a heap of bounded size and allocates
// nothing per record once that has grown. It runs on the loop's goroutine,
// as every sink; Flush passes on what it holds when the loop has stopped.
type Window struct {
	next     tracer.Sink
	widthNs  int64
	capacity int

	// slots hold the records waiting, heap their indexes ordered by time
	// and then arrival (seqs), free the slots unused.
	slots []tracer.Record
	seqs  []uint64
	heap  []int32
	free  []int32
	seq   uint64
	// passedNs is the time of the latest line passed on: a line older
	// than that is late.
	passedNs int64
	late     uint64
	scratch  tracer.Record
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
	var i int32
	if n := len(w.free); n > 0 {
		i = w.free[n-1]
		w.free = w.free[:n-1]
	} else {
		w.slots = append(w.slots, tracer.Record{})
		w.seqs = append(w.seqs, 0)
		i = int32(len(w.slots) - 1)
	}
	w.slots[i] = *r
	w.seqs[i] = w.seq
	w.seq++
	w.heap = append(w.heap, i)
	w.up(len(w.heap) - 1)
	if len(w.heap) > w.capacity {
		// The oldest of all, which may be this one, goes out early.
		w.passOldest()
	}
}

// Tick implements tracer.Sink: the lines WindowNs older than nowNs go on.
// The next deadline is when the oldest line left will be.
func (w *Window) Tick(nowNs int64) int64 {
	for len(w.heap) > 0 && w.slots[w.heap[0]].TimeNs <= nowNs-w.widthNs {
		w.passOldest()
	}
	next := w.next.Tick(nowNs)
	if len(w.heap) > 0 {
		next = tracer.EarlierDeadline(next, w.slots[w.heap[0]].TimeNs+w.widthNs)
	}
	return next
}

// Flush passes on every line held, as when the watch stops.
func (w *Window) Flush() {
	for len(w.heap) > 0 {
		w.passOldest()
	}
}

// Late counts the lines passed on out of time order.
func (w *Window) Late() uint64 { return w.late }

// passOldest passes the oldest line on and frees its slot.
func (w *Window) passOldest() {
	i := w.heap[0]
	last := len(w.heap) - 1
	w.heap[0] = w.heap[last]
	w.heap = w.heap[:last]
	if last > 0 {
		w.down(0)
	}
	w.free = append(w.free, i)
	r := &w.slots[i]
	w.passedNs = max(w.passedNs, r.TimeNs)
	w.next.Record(r)
}

// before orders the heap: by time, then by arrival.
func (w *Window) before(a, b int32) bool {
	ta, tb := w.slots[a].TimeNs, w.slots[b].TimeNs
	return ta < tb || (ta == tb && w.seqs[a] < w.seqs[b])
}

func (w *Window) up(j int) {
	for j > 0 {
		parent := (j - 1) / 2
		if !w.before(w.heap[j], w.heap[parent]) {
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
		if l := 2*j + 1; l < n && w.before(w.heap[l], w.heap[least]) {
			least = l
		}
		if r := 2*j + 2; r < n && w.before(w.heap[r], w.heap[least]) {
			least = r
		}
		if least == j {
			return
		}
		w.heap[j], w.heap[least] = w.heap[least], w.heap[j]
		j = least
	}
}
