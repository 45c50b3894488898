package correlate

// sockTable holds the correlator's sockets in chunks of fixed size that
// never move. A slice of sockets doubled as a storm's sockets piled up,
// copying them all each time: the faults of the fresh pages it copied
// into were three quarters of the watch's page faults, at some 10 us
// each on a virtual machine, and the copy left the old array to the
// collector. A chunk is added when the last is full and kept: a freed
// slot is reused through the correlator's free list.
type sockTable struct {
	chunks []*[sockChunkSize]sockState
	n      int32
}

// sockChunkSize sockets to a chunk: some 300 KiB, a few chunks for a
// busy host and one for a quiet one.
const (
	sockChunkBits = 10
	sockChunkSize = 1 << sockChunkBits
)

// at is socket i, which add returned.
func (t *sockTable) at(i int32) *sockState {
	return &t.chunks[i>>sockChunkBits][i&(sockChunkSize-1)]
}

// len is how many slots add has handed out.
func (t *sockTable) len() int32 { return t.n }

// add hands out the next slot, zeroed.
func (t *sockTable) add() int32 {
	if int(t.n) == len(t.chunks)*sockChunkSize {
		t.chunks = append(t.chunks, new([sockChunkSize]sockState))
	}
	t.n++
	return t.n - 1
}
