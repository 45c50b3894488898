package correlate

// ring is a queue in chunks that never move: the Window's lines in time
// order, each of its runs of held-back lines, and the correlator's
// sockets and held-back records (table). A buffer that doubled
// when full copied every line it held into fresh pages, each a page fault
// (some 10 us on a virtual machine), while a storm was at its height, and
// left the old buffer to the collector. A chunk is taken when the last is
// full and kept as a spare when the head leaves it, so the ring holds at
// most one chunk more than the most lines it has held at once.
type ring[T any] struct {
	// chunks are every chunk the ring has taken: the used ones in order,
	// the first holding the head, then the spares.
	chunks []*[ringChunkSize]T
	used   int
	// head is the head's place in chunks[0]; n how many items follow it.
	head, n int
}

// ringChunkSize items to a chunk: 64 KiB of lines, 68 KiB of sockets.
const (
	ringChunkBits = 8
	ringChunkSize = 1 << ringChunkBits
)

// at is the i-th item from the head.
func (q *ring[T]) at(i int) *T {
	i += q.head
	return &q.chunks[i>>ringChunkBits][i&(ringChunkSize-1)]
}

// insert makes place i for an item, moving the items after it up one, and
// returns it to be filled in place (a line's record is 240 bytes).
func (q *ring[T]) insert(i int) *T {
	if q.head+q.n == q.used*ringChunkSize {
		if q.used == len(q.chunks) {
			q.chunks = append(q.chunks, new([ringChunkSize]T))
		}
		q.used++
	}
	for j := q.n; j > i; j-- {
		*q.at(j) = *q.at(j - 1)
	}
	q.n++
	return q.at(i)
}

// pop drops the head. The item stays in place until the next insert.
func (q *ring[T]) pop() {
	q.n--
	if q.head++; q.head == ringChunkSize {
		first := q.chunks[0]
		copy(q.chunks, q.chunks[1:])
		q.chunks[len(q.chunks)-1] = first
		q.used--
		q.head = 0
	}
}

// room is how many items the ring's chunks hold.
func (q *ring[T]) room() int { return len(q.chunks) * ringChunkSize }
