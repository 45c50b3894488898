package correlate

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRingMatchesSlice: inserts anywhere and pops, across chunk borders,
// growing to a few chunks and back, keep the items a slice keeps, and
// the ring never holds more than a chunk beyond the most it held.
func TestRingMatchesSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var q ring[int]
	var want []int
	most := 0
	for step := range 20000 {
		// Grow for a while, then drain, then grow again.
		grow := (step/3000)%2 == 0
		if len(want) > 0 && (rng.IntN(3) == 0 || !grow && rng.IntN(4) != 0) {
			q.pop()
			want = want[1:]
		} else {
			i := len(want) - rng.IntN(min(len(want), 16)+1)
			*q.insert(i) = step
			want = slices.Insert(want, i, step)
		}
		most = max(most, len(want))
		if q.n != len(want) {
			t.Fatalf("step %d: %d items, want %d", step, q.n, len(want))
		}
		for i, v := range want {
			if got := *q.at(i); got != v {
				t.Fatalf("step %d: item %d is %d, want %d", step, i, got, v)
			}
		}
	}
	if most < 3*ringChunkSize {
		t.Fatalf("the test never held more than %d items: it crossed too few chunks", most)
	}
	if limit := (most/ringChunkSize + 2) * ringChunkSize; q.room() > limit {
		t.Errorf("room for %d items after holding %d at most, want at most %d", q.room(), most, limit)
	}
}
