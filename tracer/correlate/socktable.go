package correlate

// sockTable holds the correlator's sockets in a ring's chunks, which never
// move: a slice of sockets doubled as a storm's sockets piled up, copying
// them all each time, and the faults of the fresh pages it copied into
// were three quarters of the watch's page faults. Slots are only added,
// never popped: a freed one is reused through the correlator's free list.
type sockTable struct{ slots ring[sockState] }

// at is socket i, which add returned.
func (t *sockTable) at(i int32) *sockState { return t.slots.at(int(i)) }

// len is how many slots add has handed out.
func (t *sockTable) len() int32 { return int32(t.slots.n) }

// add hands out the next slot, zeroed.
func (t *sockTable) add() int32 {
	i := t.slots.n
	t.slots.insert(i)
	return int32(i)
}
