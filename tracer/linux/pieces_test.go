package linux

import (
	"slices"
	"testing"
)

func TestPieces(t *testing.T) {
	for _, n := range []int{0, 1, firstPiece, firstPiece + 1, 3*lastPiece + 5} {
		var p pieces[int]
		var want []int
		for i := range n {
			p.add(i)
			want = append(want, i)
		}
		got := p.join(3)
		if !slices.Equal(got, want) && !(n == 0 && len(got) == 0) {
			t.Errorf("%d added: joined %d, not the same", n, len(got))
		}
		if cap(got)-len(got) < 3 {
			t.Errorf("%d added: room for %d more, want 3", n, cap(got)-len(got))
		}
	}
}
