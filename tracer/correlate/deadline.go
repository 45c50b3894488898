package correlate

// A socket waits on a deadline while it holds lines back (until holdTimeoutNs
// after the first), while its stopped timewait timer has not settled
// (until cancelGraceNs after the stop), or while its owner's exit may still
// close it (until exitGraceNs after the exit). The first two also leave a
// line pending, dated before it will be put out, which the watch's reorder
// window waits for. schedule is the one place that keeps both queues in
// step with those three: every change to them calls it, so no socket can
// take on a deadline or a pending line without joining its queue, nor keep
// a place it no longer needs.

// deadline is the earliest moment Tick must look at s, if it must at all.
func (s *sockState) deadline() (int64, bool) {
	var e earliest
	e.add(s.heldNs+holdTimeoutNs, s.nheld > 0)
	e.add(s.cancelNs+cancelGraceNs, s.cancelNs != 0)
	e.add(s.exitNs+exitGraceNs, s.exitNs != 0)
	return e.ns, e.ok
}

// pendingSince is the time of the oldest line s may still put out dated
// before now, if any: its first held line, or its timer's stop, which
// dates the TIME_WAIT -> CLOSE line the stop will settle into.
func (s *sockState) pendingSince() (int64, bool) {
	var e earliest
	e.add(s.heldNs, s.nheld > 0)
	e.add(s.cancelNs, s.cancelNs != 0)
	return e.ns, e.ok
}

// earliest is the earliest of the times added that apply, ok false while
// none has.
type earliest struct {
	ns int64
	ok bool
}

func (e *earliest) add(ns int64, applies bool) {
	if applies && (!e.ok || ns < e.ns) {
		e.ns, e.ok = ns, true
	}
}

// schedule puts socket i in each queue at its current key, moves it there,
// or takes it out when it has none.
func (c *Correlator) schedule(i int32) {
	s := c.socks.at(i)
	d, ok := s.deadline()
	c.queue.place(&c.socks, i, d, ok)
	p, ok := s.pendingSince()
	c.pending.place(&c.socks, i, p, ok)
}

// unschedule takes socket i out of both queues.
func (c *Correlator) unschedule(i int32) {
	c.queue.remove(&c.socks, i)
	c.pending.remove(&c.socks, i)
}

// PendingSinceNs is the time of the oldest line the correlator holds back,
// ok false when it holds none: every line it puts out from now on is dated
// at that time or later, or at the event it reports.
func (c *Correlator) PendingSinceNs() (int64, bool) {
	i, ok := c.pending.first()
	if !ok {
		return 0, false
	}
	return c.socks.at(i).places[byPending].key, true
}

// queueKind names a socket's two queues: by deadline, the one Tick follows;
// by the time of its oldest pending line, the one PendingSinceNs reads.
type queueKind uint8

const (
	byDeadline queueKind = iota
	byPending
	queueKinds
)

// queuePlace is a socket's key in one queue and its position there plus
// one (0: not queued).
type queuePlace struct {
	key int64
	pos int32
}

// sockQueue is a binary min-heap of socket indexes ordered by their key of
// one kind; each socket records its position so that it can be moved or
// removed in O(log n) without a search. It allocates only when it grows
// past its largest size so far.
type sockQueue struct {
	kind  queueKind
	socks []int32
}

func (q *sockQueue) first() (int32, bool) {
	if len(q.socks) == 0 {
		return 0, false
	}
	return q.socks[0], true
}

// place puts socket i in the queue at key, moves it there, or (without
// ok) takes it out.
func (q *sockQueue) place(socks *sockTable, i int32, key int64, ok bool) {
	p := &socks.at(i).places[q.kind]
	switch {
	case !ok:
		q.remove(socks, i)
	case p.pos == 0:
		p.key = key
		q.push(socks, i)
	case key != p.key:
		p.key = key
		q.fix(socks, p.pos-1)
	}
}

func (q *sockQueue) push(socks *sockTable, i int32) {
	q.socks = append(q.socks, i)
	socks.at(i).places[q.kind].pos = int32(len(q.socks))
	q.up(socks, len(q.socks)-1)
}

func (q *sockQueue) remove(socks *sockTable, i int32) {
	pos := int(socks.at(i).places[q.kind].pos) - 1
	if pos < 0 {
		return
	}
	socks.at(i).places[q.kind].pos = 0
	last := len(q.socks) - 1
	if pos != last {
		q.socks[pos] = q.socks[last]
		socks.at(q.socks[pos]).places[q.kind].pos = int32(pos + 1)
	}
	q.socks = q.socks[:last]
	if pos != last {
		q.fix(socks, int32(pos))
	}
}

// fix restores the heap order after the key at pos changed.
func (q *sockQueue) fix(socks *sockTable, pos int32) {
	if !q.down(socks, int(pos)) {
		q.up(socks, int(pos))
	}
}

func (q *sockQueue) less(socks *sockTable, a, b int) bool {
	return socks.at(q.socks[a]).places[q.kind].key < socks.at(q.socks[b]).places[q.kind].key
}

func (q *sockQueue) swap(socks *sockTable, a, b int) {
	q.socks[a], q.socks[b] = q.socks[b], q.socks[a]
	socks.at(q.socks[a]).places[q.kind].pos = int32(a + 1)
	socks.at(q.socks[b]).places[q.kind].pos = int32(b + 1)
}

func (q *sockQueue) up(socks *sockTable, pos int) {
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
func (q *sockQueue) down(socks *sockTable, pos int) bool {
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
