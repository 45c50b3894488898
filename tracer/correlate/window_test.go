package correlate

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

// passed collects what a Window passes on: "time" in ms, "!" for late, and
// "tick" for the ticks it passes through.
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

// feed gives the window records at these times (ms); a negative number is
// a tick at that time (ms, negated).
func feedWindow(w *Window, steps ...int64) {
	for _, ms := range steps {
		if ms < 0 {
			w.Tick(-ms * 1e6)
			continue
		}
		w.Record(&tracer.Record{TimeNs: ms * 1e6})
	}
}

func TestWindowSequences(t *testing.T) {
	for _, tc := range []struct {
		name     string
		capacity int
		steps    []int64
		want     []string
		late     uint64
	}{{
		name:     "lines held up to the window take their place",
		capacity: 16,
		// Server lines of 10 and 11 ms come after the client's of 12 ms,
		// released by the correlator's hold.
		steps: []int64{12, 13, -500, 10, 11, 20, -1012, -1013},
		want:  []string{"10", "11", "12", "13"},
	}, {
		name:     "a tick passes on only what the window has passed",
		capacity: 16,
		steps:    []int64{100, 900, -1099, -1100, -1899},
		want:     []string{"100"},
	}, {
		name:     "a line older than one passed on goes out at once, marked late",
		capacity: 16,
		steps:    []int64{100, 200, -1150, 50, 150, 250, -1300},
		want:     []string{"100", "50!", "150", "200", "250"},
		late:     1,
	}, {
		name:     "a full window pushes its oldest out early, and what is older than that is late",
		capacity: 3,
		steps:    []int64{10, 20, 30, 40, 15, 50, 5, 60, -1060},
		want:     []string{"10", "15", "20", "5!", "30", "40", "50", "60"},
		late:     1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := &passed{}
			w := newWindow(p, WindowNs, tc.capacity)
			feedWindow(w, tc.steps...)
			if !slices.Equal(p.out, tc.want) {
				t.Errorf("passed on %v, want %v", p.out, tc.want)
			}
			if w.Late() != tc.late {
				t.Errorf("%d late, want %d", w.Late(), tc.late)
			}
			if held := len(w.lines.buf) + len(w.slots); held > 2*(tc.capacity+1) {
				t.Errorf("room for %d lines for a capacity of %d", held, tc.capacity)
			}
		})
	}
}

// TestWindowKeepsArrivalOrderAtOneTime: lines of the same time (told
// apart by their ports here) go out as they came.
func TestWindowKeepsArrivalOrderAtOneTime(t *testing.T) {
	p := &passed{}
	w := newWindow(p, WindowNs, 16)
	for port := range uint16(6) {
		w.Record(&tracer.Record{TimeNs: 5e6, SPort: port + 1})
	}
	w.Flush()
	if want := []string{"5#1", "5#2", "5#3", "5#4", "5#5", "5#6"}; !slices.Equal(p.out, want) {
		t.Errorf("passed on %v, want %v", p.out, want)
	}
}

// TestWindowSortsWhatItHolds shuffles lines within the window's width: what
// comes out is in order, with nothing late, lost or added.
func TestWindowSortsWhatItHolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var times []int64
	for ms := range int64(5000) {
		times = append(times, ms)
	}
	// Each line arrives up to 900 ms after its time, as held lines do.
	arrival := make([]int64, len(times))
	for i, ms := range times {
		arrival[i] = ms + rng.Int64N(900)
	}
	order := make([]int, len(times))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return int(arrival[a] - arrival[b]) })

	p := &passed{}
	w := newWindow(p, WindowNs, windowCapacity)
	for _, i := range order {
		feedWindow(w, times[i], -arrival[i])
	}
	w.Flush()
	if w.Late() != 0 {
		t.Errorf("%d lines late", w.Late())
	}
	want := make([]string, len(times))
	for i, ms := range times {
		want[i] = fmt.Sprint(ms)
	}
	if !slices.Equal(p.out, want) {
		t.Errorf("lines out of order or missing: %d passed, want %d", len(p.out), len(want))
	}
}

func TestWindowAllocatesNothingPerRecord(t *testing.T) {
	w := newWindow(&discard{}, WindowNs, 1024)
	ms := int64(0)
	run := func() {
		for range 512 {
			ms++
			feedWindow(w, ms, ms-3)
		}
		w.Tick(ms * 1e6)
	}
	run() // grows the heap and its slots once
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
	widthNs  int64
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

func (w *referenceWindow) tick(nowNs int64) {
	for len(w.held) > 0 {
		oldest := slices.MinFunc(w.held, func(a, b heapEntry) int {
			if before(&a, &b) {
				return -1
			}
			return 1
		})
		if oldest.timeNs > nowNs-w.widthNs {
			return
		}
		w.passOldest()
	}
}

// TestWindowMatchesReference: lines mostly in order, some held back, some
// at one time, with ticks between and a capacity the storm overruns: the
// Window passes on what the reference does, in the same order, late marks
// included.
func TestWindowMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 200 {
		capacity := 1 + rng.IntN(40)
		got, want := &passed{}, &passed{}
		w := newWindow(got, 100e6, capacity)
		ref := &referenceWindow{next: want, widthNs: 100e6, capacity: capacity, records: map[uint64]tracer.Record{}}
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
				w.Tick(nowMs * 1e6)
				ref.tick(nowMs * 1e6)
			}
		}
		w.Flush()
		ref.tick(1 << 62)
		if !slices.Equal(got.out, want.out) {
			t.Fatalf("round %d, capacity %d:\n got %v\nwant %v", round, capacity, got.out, want.out)
		}
	}
}

// BenchmarkWindow: a storm's lines through a full window, a third of them
// a place or two out of order (two CPUs), one in ten held back 300 ms, a
// tick every 256 lines.
func BenchmarkWindow(b *testing.B) {
	w := NewWindow(discard{})
	r := tracer.Record{}
	b.ReportAllocs()
	for i := range b.N {
		// 150,000 lines a second: the window holds a full second.
		r.TimeNs = int64(i) * 6_667
		if i%3 == 1 {
			r.TimeNs -= 10_000
		}
		if i%10 == 0 {
			r.TimeNs -= 300e6
		}
		w.Record(&r)
		if i%256 == 0 {
			w.Tick(int64(i) * 6_667)
		}
	}
}
