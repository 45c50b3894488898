package correlate

// table holds items in a ring's chunks, which never move: the
// correlator's sockets (sockTable) and the records of the Window's
// held-back lines. A slice of them doubled as a storm piled them up,
// copying them all each time: the faults of the fresh pages it copied
// sockets into were three quarters of the watch's page faults, and the
// copies of held-back records a twentieth of a JSON watch's time in a
// storm. Slots are only added, never popped: a freed one is reused
// through its owner's free list.
type table[T any] struct{ slots ring[T] }

// sockTable is the correlator's sockets.
type sockTable = table[sockState]

// at is item i, which add returned.
func (t *table[T]) at(i int32) *T { return t.slots.at(int(i)) }

// len is how many slots add has handed out.
func (t *table[T]) len() int32 { return int32(t.slots.n) }

// add hands out the next slot, zeroed.
func (t *table[T]) add() int32 {
	i := t.slots.n
	t.slots.insert(i)
	return int32(i)
}
