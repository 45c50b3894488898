package correlate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

// passed collects what a Window passes on: "time" in ms, "!" for late.
type passed struct{ out []string }

func (p *passed) Record(r *tracer.Record) {
	s := fmt.Sprint(r.TimeNs / 1e6)
	if r.Late {
		s += "!"
	}
	if r.SPort != 0 {
		s += fmt.Sprintf("#%d", r.SPort)
	}
	p.out = append(p.out, s)
}

func (p *passed) Tick(int64) int64 { return tracer.NoDeadline }

// held is a Pending that holds a line of time sinceNs back while ok.
type held struct {
	sinceNs int64
	ok      bool
}

func (h *held) PendingSinceNs() (int64, bool) { return h.sinceNs, h.ok }

// windowSteps gives the window records and ticks: "12" is a line of 12 ms,
// "t500" a tick at 500 ms, "h10" a line of 10 ms held back before the
// window, "h-" nothing held back any more.
func windowSteps(t *testing.T, w *Window, h *held, steps string) {
	t.Helper()
	for _, step := range strings.Fields(steps) {
		if step == "h-" {
			h.ok = false
			continue
		}
		kind := step[0]
		if kind == 't' || kind == 'h' {
			step = step[1:]
		}
		ms, err := strconv.ParseInt(step, 10, 64)
		if err != nil {
			t.Fatalf("bad step %q", step)
		}
		switch kind {
		case 't':
			w.Tick(ms * 1e6)
		case 'h':
			h.sinceNs, h.ok = ms*1e6, true
		default:
			w.Record(&tracer.Record{TimeNs: ms * 1e6})
		}
	}
}

func TestWindowSequences(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int
		steps    string
		want     []string
		late     uint64
	}{{
		name:     "lines held back take their place",
		capacity: 16,
		// Server lines of 10 and 11 ms come after the client's of 12 ms,
		// released by the correlator's hold.
		steps: "h10 12 13 t500 10 11 h- t15 20 t19",
		want:  []string{"10", "11", "12", "13"},
	}, {
		name:     "a tick passes on only what is older than its time",
		capacity: 16,
		steps:    "100 900 t99 t100 t101 t900",
		want:     []string{"100"},
	}, {
		name:     "a line older than one passed on goes out at once, marked late",
		capacity: 16,
		steps:    "100 200 t150 50 150 250 t300",
		want:     []string{"100", "50!", "150", "200", "250"},
		late:     1,
	}, {
		name:     "a full window pushes its oldest out early, and what is older than that is late",
		capacity: 3,
		steps:    "h0 10 20 30 40 15 50 5 60 h- t1060",
		want:     []string{"10", "15", "20", "5!", "30", "40", "50", "60"},
		late:     1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p, h := &passed{}, &held{}
			w := newWindow(p, tc.capacity)
			w.Follow(h)
			windowSteps(t, w, h, tc.steps)
			if !slices.Equal(p.out, tc.want) {
				t.Errorf("passed on %v, want %v", p.out, tc.want)
			}
			if w.Late() != tc.late {
				t.Errorf("%d late, want %d", w.Late(), tc.late)
			}
			// A chunk more than the lines the window held at most.
			chunks := (tc.capacity+1+ringChunkSize-1)/ringChunkSize + 1
			if room := w.lines.room(); room > chunks*ringChunkSize {
				t.Errorf("ring room for %d lines for a capacity of %d", room, tc.capacity)
			}
			if int(w.slots.len()) > tc.capacity+1 {
				t.Errorf("%d slots for a capacity of %d", w.slots.len(), tc.capacity)
			}
		})
	}
}

// TestWindowDeadlines: a line that waits for the clock asks for the tick
// just after its time; one that waits for a held line asks for none (the
// correlator's deadline comes first), so that a watch never spins while
// a connection waits to be accepted.
func TestWindowDeadlines(t *testing.T) {
	h := &held{}
	w := newWindow(&passed{}, 16)
	w.Follow(h)
	w.Record(&tracer.Record{TimeNs: 900})
	if got := w.Tick(500); got != 901 {
		t.Errorf("waiting for the clock: deadline %d, want 901", got)
	}
	h.sinceNs, h.ok = 800, true
	if got := w.Tick(1000); got != tracer.NoDeadline {
		t.Errorf("waiting for a held line: deadline %d, want none", got)
	}
	h.ok = false
	if got := w.Tick(1000); got != tracer.NoDeadline || w.lines.n != 0 {
		t.Errorf("with nothing held: deadline %d and %d lines left, want none", got, w.lines.n)
	}
}

// TestWindowKeepsArrivalOrderAtOneTime: lines of the same time (told
// apart by their ports here) go out as they came.
func TestWindowKeepsArrivalOrderAtOneTime(t *testing.T) {
	p := &passed{}
	w := newWindow(p, 16)
	w.Follow(&held{})
	for port := range uint16(6) {
		w.Record(&tracer.Record{TimeNs: 5e6, SPort: port + 1})
	}
	w.Flush()
	if want := []string{"5#1", "5#2", "5#3", "5#4", "5#5", "5#6"}; !slices.Equal(p.out, want) {
		t.Errorf("passed on %v, want %v", p.out, want)
	}
}

// TestWindowSortsWhatItHolds shuffles lines as a correlator's holds do,
// each arriving up to 900 ms after its time while the ones still to come
// are held: what comes out is in order, with nothing late, lost or added.
func TestWindowSortsWhatItHolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 5000
	arrival := make([]int64, n) // by time in ms
	for ms := range int64(n) {
		arrival[ms] = ms + rng.Int64N(900)
	}
	order := make([]int64, n)
	for i := range order {
		order[i] = int64(i)
	}
	slices.SortStableFunc(order, func(a, b int64) int { return int(arrival[a] - arrival[b]) })

	p, h := &passed{}, &held{}
	w := newWindow(p, windowCapacity)
	w.Follow(h)
	fed := make([]bool, n)
	oldestUnfed := int64(0)
	for _, ms := range order {
		w.Record(&tracer.Record{TimeNs: ms * 1e6})
		fed[ms] = true
		for oldestUnfed < n && fed[oldestUnfed] {
			oldestUnfed++
		}
		h.sinceNs, h.ok = oldestUnfed*1e6, oldestUnfed < n
		w.Tick(arrival[ms] * 1e6)
	}
	w.Flush()
	if w.Late() != 0 {
		t.Errorf("%d lines late", w.Late())
	}
	want := make([]string, n)
	for ms := range want {
		want[ms] = fmt.Sprint(ms)
	}
	if !slices.Equal(p.out, want) {
		t.Errorf("lines out of order or missing: %d passed, want %d", len(p.out), len(want))
	}
}

func TestWindowAllocatesNothingPerRecord(t *testing.T) {
	w := newWindow(&discard{}, 1024)
	w.Follow(&held{})
	ms := int64(0)
	run := func() {
		for range 512 {
			ms++
			w.Record(&tracer.Record{TimeNs: ms * 1e6})
			w.Record(&tracer.Record{TimeNs: (ms - 3) * 1e6})
		}
		w.Tick(ms * 1e6)
	}
	run() // grows the ring and its slots once
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations per 512 records", n)
	}
}

type discard struct{}

func (discard) Record(*tracer.Record) {}
func (discard) Tick(int64) int64      { return tracer.NoDeadline }

// referenceWindow is the Window's contract in its plainest form: a list
// searched for its oldest line each time.
type referenceWindow struct {
	next     *passed
	capacity int
	held     []heapEntry
	records  map[uint64]tracer.Record // by seq
	seq      uint64
	passedNs int64
}

func (w *referenceWindow) record(r tracer.Record) {
	if r.TimeNs < w.passedNs {
		r.Late = true
		w.next.Record(&r)
		return
	}
	w.seq++
	w.held = append(w.held, heapEntry{timeNs: r.TimeNs, seq: w.seq})
	w.records[w.seq] = r
	if len(w.held) > w.capacity {
		w.passOldest()
	}
}

func (w *referenceWindow) passOldest() {
	oldest := 0
	for i := range w.held {
		if before(&w.held[i], &w.held[oldest]) {
			oldest = i
		}
	}
	r := w.records[w.held[oldest].seq]
	w.held = slices.Delete(w.held, oldest, oldest+1)
	w.passedNs = max(w.passedNs, r.TimeNs)
	w.next.Record(&r)
}

// tick passes what is older than settledNs: the tick's time or the
// oldest line held back, whichever is earlier.
func (w *referenceWindow) tick(settledNs int64) {
	for len(w.held) > 0 {
		oldest := slices.MinFunc(w.held, func(a, b heapEntry) int {
			if before(&a, &b) {
				return -1
			}
			return 1
		})
		if oldest.timeNs >= settledNs {
			return
		}
		w.passOldest()
	}
}

// TestWindowMatchesReference: lines mostly in order, some held back, some
// at one time, with ticks between, held lines before it some of the time
// and a capacity the storm overruns: the Window passes on what the
// reference does, in the same order, late marks included.
func TestWindowMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 200 {
		capacity := 1 + rng.IntN(40)
		got, want := &passed{}, &passed{}
		h := &held{}
		w := newWindow(got, capacity)
		w.Follow(h)
		ref := &referenceWindow{next: want, capacity: capacity, records: map[uint64]tracer.Record{}}
		nowMs := int64(0)
		for i := range 500 {
			nowMs += rng.Int64N(3)
			ms := nowMs
			if rng.IntN(5) == 0 {
				ms -= rng.Int64N(150) // held back, some past the window
			}
			r := tracer.Record{TimeNs: max(ms, 0) * 1e6, SPort: uint16(i)}
			w.Record(&r)
			ref.record(r)
			if rng.IntN(10) == 0 {
				settledMs := nowMs - 5
				h.ok = rng.IntN(2) == 0
				if h.ok {
					h.sinceNs = (nowMs - rng.Int64N(100)) * 1e6
					settledMs = min(settledMs, h.sinceNs/1e6)
				}
				w.Tick((nowMs - 5) * 1e6)
				ref.tick(settledMs * 1e6)
			}
		}
		w.Flush()
		ref.tick(1 << 62)
		if !slices.Equal(got.out, want.out) {
			t.Fatalf("round %d, capacity %d:\n got %v\nwant %v", round, capacity, got.out, want.out)
		}
	}
}

// BenchmarkWindow: a storm's lines (150,000 a second), a third of them a
// place or two out of order (two CPUs), one in ten held back before the
// window (a passive socket's, until its accept), a tick every 256 lines
// 10 ms behind the storm (the source's delivery lag): accepted at once,
// or 300 ms late, when the window holds everything since.
func BenchmarkWindow(b *testing.B) {
	for _, bc := range []struct {
		name   string
		holdNs int64
	}{{"accepted-at-once", 100_000}, {"accepted-300ms-late", 300e6}} {
		b.Run(bc.name, func(b *testing.B) {
			h := &held{ok: true}
			w := NewWindow(discard{})
			w.Follow(h)
			r := tracer.Record{}
			b.ReportAllocs()
			for i := range b.N {
				nowNs := int64(i) * 6_667
				r.TimeNs = nowNs
				if i%3 == 1 {
					r.TimeNs -= 10_000
				}
				if i%10 == 0 {
					r.TimeNs -= bc.holdNs
				}
				w.Record(&r)
				if i%256 == 0 {
					h.sinceNs = nowNs - bc.holdNs
					w.Tick(nowNs - 10e6)
				}
			}
		})
	}
}
