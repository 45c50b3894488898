package correlate

// A socket waits on a deadline while it holds lines back (until holdTimeoutNs
// after the first), while its stopped timewait timer has not settled
// (until cancelGraceNs after the stop), or while its owner's exit may still
// close it (until exitGraceNs after the exit). schedule is the one place
// that keeps the deadline queue in step with those three: every change to
// them calls it, so no socket can take on a deadline without joining the
// queue, nor keep a place it no longer needs.

// deadline is the earliest moment Tick must look at s, if it must at all.
func (s *sockState) deadline() (int64, bool) {
	var d int64
	ok := false
	earliest := func(t int64) {
		if !ok || t < d {
			d, ok = t, true
		}
	}
	if s.nheld > 0 {
		earliest(s.heldNs + holdTimeoutNs)
	}
	if s.cancelNs != 0 {
		earliest(s.cancelNs + cancelGraceNs)
	}
	if s.exitNs != 0 {
		earliest(s.exitNs + exitGraceNs)
	}
	return d, ok
}

// schedule puts socket i in the deadline queue at its current deadline,
// moves it there, or takes it out when it has none.
func (c *Correlator) schedule(i int32) {
	s := &c.socks[i]
	d, ok := s.deadline()
	switch {
	case !ok:
		c.queue.remove(c.socks, i)
	case s.queuePos == 0:
		s.deadlineNs = d
		c.queue.push(c.socks, i)
	case d != s.deadlineNs:
		s.deadlineNs = d
		c.queue.fix(c.socks, s.queuePos-1)
	}
}

// deadlineQueue is a binary min-heap of socket indexes ordered by their
// deadlineNs; each socket records its position (queuePos) so that it can be
// moved or removed in O(log n) without a search. It allocates only when it
// grows past its largest size so far.
type deadlineQueue struct {
	socks []int32
}

func (q *deadlineQueue) first() (int32, bool) {
	if len(q.socks) == 0 {
		return 0, false
	}
	return q.socks[0], true
}

func (q *deadlineQueue) push(socks []sockState, i int32) {
	q.socks = append(q.socks, i)
	socks[i].queuePos = int32(len(q.socks))
	q.up(socks, len(q.socks)-1)
}

func (q *deadlineQueue) remove(socks []sockState, i int32) {
	pos := int(socks[i].queuePos) - 1
	if pos < 0 {
		return
	}
	socks[i].queuePos = 0
	last := len(q.socks) - 1
	if pos != last {
		q.socks[pos] = q.socks[last]
		socks[q.socks[pos]].queuePos = int32(pos + 1)
	}
	q.socks = q.socks[:last]
	if pos != last {
		q.fix(socks, int32(pos))
	}
}

// fix restores the heap order after the deadline at pos changed.
func (q *deadlineQueue) fix(socks []sockState, pos int32) {
	if !q.down(socks, int(pos)) {
		q.up(socks, int(pos))
	}
}

func (q *deadlineQueue) less(socks []sockState, a, b int) bool {
	return socks[q.socks[a]].deadlineNs < socks[q.socks[b]].deadlineNs
}

func (q *deadlineQueue) swap(socks []sockState, a, b int) {
	q.socks[a], q.socks[b] = q.socks[b], q.socks[a]
	socks[q.socks[a]].queuePos = int32(a + 1)
	socks[q.socks[b]].queuePos = int32(b + 1)
}

func (q *deadlineQueue) up(socks []sockState, pos int) {
	for pos > 0 {
		parent := (pos - 1) / 2
		if !q.less(socks, pos, parent) {
			return
		}
		q.swap(socks, pos, parent)
		pos = parent
	}
}

// down moves the entry at pos towards the leaves and reports whether it
// moved.
func (q *deadlineQueue) down(socks []sockState, pos int) bool {
	start := pos
	for {
		child := 2*pos + 1
		if child >= len(q.socks) {
			break
		}
		if right := child + 1; right < len(q.socks) && q.less(socks, right, child) {
			child = right
		}
		if !q.less(socks, child, pos) {
			break
		}
		q.swap(socks, pos, child)
		pos = child
	}
	return pos > start
}
