package correlate

import "github.com/porttrace/porttrace/tracer"

// windowCapacity bounds the lines a Window holds (240 bytes each): a storm
// of more lines than this while the correlator holds one back pushes the
// oldest out early, and a line older than those, arriving after them, is
// marked late.
const windowCapacity = 1 << 16

// Window is a Sink that passes records on in time order. The correlator
// emits most lines as their events arrive, but holds a passive socket's
// until it is accepted and a stopped timewait timer's until it knows how
// the socket ended. A Window holds every line until no older one can come:
// until its source has delivered every event of its time (the time its
// ticks give), and the correlator holds no line as old (Pending). It
// passes them on sorted by time. So a line waits as long as the source's
// delivery lags (milliseconds) while nothing is held, and, while a
// connection waits to be accepted, as long as that (the correlator's hold:
// up to a second). A line that still arrives after a later one went out
// (held past the hold, or pushed past by a storm that filled the window)
// goes out at once, marked Late.
//
// Nearly every line arrives in time order, or a few places out of it:
// those wait in a ring, in order, at a small constant cost each. The lines
// that arrive long after later ones (the held ones) wait in slots, their
// places in order in a few runs: a storm's passive sockets are accepted in
// about the order they connected, so their held lines come back in time
// order among themselves, and a run takes each at a constant cost. Only a
// line older than the last of every run goes to a heap. The oldest of the
// ring's first, the runs' first and the heap's top goes out first.
//
// It holds copies of the records and allocates nothing per record once
// its ring and heap have grown. It runs on the loop's goroutine, as every
// sink; Flush passes on what it holds when the loop has stopped.
type Window struct {
	next     tracer.Sink
	pending  Pending
	capacity int

	// lines holds the lines that came in time order.
	lines ring[windowLine]
	// runs and heap order the others by time and then arrival; their
	// records wait in slots (free lists the unused ones), so that runs
	// and heap move small entries.
	runs  [heldRuns]ring[heapEntry]
	heap  []heapEntry
	slots table[tracer.Record]
	free  []int32
	seq   uint64
	// passedNs is the time of the latest line passed on: a line older
	// than that is late.
	passedNs int64
	late     uint64
	scratch  tracer.Record
}

// Pending is what holds lines back before a Window: the correlator, through
// its Loop.
type Pending interface {
	// PendingSinceNs is the time of the oldest line held back, ok false
	// when none is.
	PendingSinceNs() (ns int64, ok bool)
}

// windowLine is a line waiting, with its place in the order of arrival.
type windowLine struct {
	seq uint64
	r   tracer.Record
}

// heapEntry is a held-back line's place in a run or the heap: its time,
// its place in the order of arrival, and the slot of its record.
type heapEntry struct {
	timeNs int64
	seq    uint64
	slot   int32
}

// heldRuns is how many runs of held-back lines the Window keeps: lines
// held for their accept, and a stopped timewait timer's, which come back
// in order among themselves but not with each other.
const heldRuns = 3

var _ tracer.Sink = (*Window)(nil)

// NewWindow returns a Window in front of next. It must Follow what holds
// lines back before it is ticked.
func NewWindow(next tracer.Sink) *Window {
	return newWindow(next, windowCapacity)
}

func newWindow(next tracer.Sink, capacity int) *Window {
	return &Window{next: next, capacity: capacity}
}

// Follow has the Window wait for the lines that p holds back: the loop
// whose correlator's records reach it, which is made after the Window it
// sends them to.
func (w *Window) Follow(p Pending) { w.pending = p }

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
	// One more line than the window holds: Record then passes one on.
	if i, ok := w.place(r.TimeNs); ok {
		l := w.lines.insert(i)
		l.seq, l.r = w.seq, *r
	} else {
		var slot int32
		if n := len(w.free); n > 0 {
			slot, w.free = w.free[n-1], w.free[:n-1]
		} else {
			slot = w.slots.add()
		}
		*w.slots.at(slot) = *r
		w.hold(heapEntry{timeNs: r.TimeNs, seq: w.seq, slot: slot})
	}
	if w.lines.n+w.held() > w.capacity {
		// The oldest of all, which may be this one, goes out early.
		w.passOldest()
	}
}

// hold puts a held-back line in the first run that takes it, or else in
// the heap.
func (w *Window) hold(e heapEntry) {
	for k := range w.runs {
		if q := &w.runs[k]; q.n == 0 || q.at(q.n-1).timeNs <= e.timeNs {
			*q.insert(q.n) = e
			return
		}
	}
	w.heap = append(w.heap, e)
	w.up(len(w.heap) - 1)
}

// held is how many held-back lines wait, in the runs and the heap.
func (w *Window) held() int {
	n := len(w.heap)
	for k := range w.runs {
		n += w.runs[k].n
	}
	return n
}

// maxShift is how far back in the ring a line may take its place. Lines
// from two CPUs reach the ring buffer a little out of time order (each
// stamps its event before it reserves room for it), most a place or two
// late; a line later than this, held back by the correlator, waits in the
// heap.
const maxShift = 16

// place is where in the ring a line of time timeNs goes, after every line
// of its time or earlier; ok is false when that is more than maxShift
// lines back from the ring's end.
func (w *Window) place(timeNs int64) (i int, ok bool) {
	n := w.lines.n
	for i = n; i > 0 && w.lines.at(i-1).r.TimeNs > timeNs; i-- {
		if n-i == maxShift {
			return 0, false
		}
	}
	return i, true
}

// Where the oldest line waits: in the ring, a run (its index) or the
// heap.
const (
	fromRing = -1
	fromHeap = heldRuns
)

// oldest is the record to pass on next, nil if none waits, and where it
// waits.
func (w *Window) oldest() (r *tracer.Record, from int) {
	if w.held() == 0 {
		// Nearly always in a storm between the accepts' releases.
		if w.lines.n == 0 {
			return nil, fromRing
		}
		return &w.lines.at(0).r, fromRing
	}
	var first *heapEntry // the oldest held-back line
	from = fromRing
	for k := range w.runs {
		if q := &w.runs[k]; q.n > 0 && (first == nil || before(q.at(0), first)) {
			first, from = q.at(0), k
		}
	}
	if len(w.heap) > 0 && (first == nil || before(&w.heap[0], first)) {
		first, from = &w.heap[0], fromHeap
	}
	if w.lines.n > 0 {
		if l := w.lines.at(0); first == nil || before(&heapEntry{timeNs: l.r.TimeNs, seq: l.seq}, first) {
			return &l.r, fromRing
		}
	}
	if first == nil {
		return nil, fromRing
	}
	return w.slots.at(first.slot), from
}

// Tick implements tracer.Sink: the lines older than nowNs, up to which the
// source has delivered every event, and than every line held back, go on.
// A line left that waits for the clock asks for the tick after its time;
// one that waits for a held line waits for the correlator, whose deadline
// or next event releases it.
func (w *Window) Tick(nowNs int64) int64 {
	settledNs := nowNs
	if p, ok := w.pending.PendingSinceNs(); ok {
		settledNs = min(settledNs, p)
	}
	for {
		r, from := w.oldest()
		if r == nil || r.TimeNs >= settledNs {
			break
		}
		w.pass(r, from)
	}
	next := w.next.Tick(nowNs)
	if r, _ := w.oldest(); r != nil && r.TimeNs >= nowNs {
		next = tracer.EarlierDeadline(next, r.TimeNs+1)
	}
	return next
}

// Flush passes on every line held, as when the watch stops.
func (w *Window) Flush() {
	for w.lines.n > 0 || w.held() > 0 {
		w.passOldest()
	}
}

// Late counts the lines passed on out of time order.
func (w *Window) Late() uint64 { return w.late }

// passOldest passes the oldest line on.
func (w *Window) passOldest() { w.pass(w.oldest()) }

// pass passes on r, the oldest line, from where oldest found it.
func (w *Window) pass(r *tracer.Record, from int) {
	// Its ring place or slot is not reused before the next Record.
	switch from {
	case fromRing:
		w.lines.pop()
	case fromHeap:
		w.free = append(w.free, w.heap[0].slot)
		last := len(w.heap) - 1
		w.heap[0] = w.heap[last]
		w.heap = w.heap[:last]
		if last > 0 {
			w.down(0)
		}
	default:
		w.free = append(w.free, w.runs[from].at(0).slot)
		w.runs[from].pop()
	}
	w.passedNs = max(w.passedNs, r.TimeNs)
	w.next.Record(r)
}

// before orders held-back lines: by time, then by arrival.
func before(a, b *heapEntry) bool {
	return a.timeNs < b.timeNs || (a.timeNs == b.timeNs && a.seq < b.seq)
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
