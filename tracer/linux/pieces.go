package linux

// pieces collects what a dump or a walk finds, one piece at a time, and
// joins the pieces once at the end. A busy port's tens of thousands of
// sockets in one growing slice were copied some five times over as it
// grew, each copy into fresh pages the kernel had to fault in: most of
// who's memory traffic.
type pieces[T any] struct {
	full [][]T
	last []T
}

// firstPiece is the first piece's length; each next is twice as long, up
// to lastPiece: a quiet port's few sockets take one small piece.
const (
	firstPiece = 64
	lastPiece  = 8192
)

func (p *pieces[T]) add(v T) {
	if len(p.last) == cap(p.last) {
		size := firstPiece
		if p.last != nil {
			p.full = append(p.full, p.last)
			size = min(2*cap(p.last), lastPiece)
		}
		p.last = make([]T, 0, size)
	}
	p.last = append(p.last, v)
}

// join returns everything added, in order, in one slice with room for
// extra more.
func (p *pieces[T]) join(extra int) []T {
	if len(p.full) == 0 && cap(p.last)-len(p.last) >= extra {
		return p.last
	}
	n := len(p.last)
	for _, f := range p.full {
		n += len(f)
	}
	out := make([]T, 0, n+extra)
	for _, f := range p.full {
		out = append(out, f...)
	}
	return append(out, p.last...)
}
