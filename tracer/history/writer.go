package history

import (
	"bytes"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/porttrace/porttrace/tracer"
)

const (
	// commitInterval is how often the writer commits what came in: with
	// the sink's countsFlushNs, the most a kill -9 loses.
	commitInterval = 500 * time.Millisecond
	// maxBatch bounds one commit, so that a storm commits in steps.
	maxBatch = 1 << 14
	// retainInterval is how often entries past MaxAge are deleted.
	retainInterval = time.Minute
	// maxOpenBound is how many bound, never listening sockets a port may
	// have open holders for. Their end is not in the record stream when
	// they neither listen nor connect (UDP above all), so without a bound
	// a resolver binding random ports would fill the history with holders
	// that never end; past it the oldest is ended as EndUnseen.
	maxOpenBound = 8
	// appendFill packs the pages of buckets whose entries go to the end of
	// a few hot ports' key ranges (failed binds, owner changes, counts): a
	// page that splits there is seldom written again. Holders spread over
	// every port that was ever bound keep bbolt's default (half), which
	// suits inserts into the middle of pages (measured on 500,000 holders
	// over 60,000 ports: 71% full pages at a half, 41% at 0.9).
	appendFill = 0.9
)

// write is the writer goroutine, the only one that writes the database:
// it commits what the sink queued at least every commitInterval, applies
// retention, and stops writing (dropping and counting) once a commit
// fails.
func (s *Store) write() {
	defer close(s.done)
	ticker := time.NewTicker(commitInterval)
	defer ticker.Stop()
	batch := make([]change, 0, maxBatch)
	retained := time.Now()
	var drops dropsLogged
	for {
		select {
		case c := <-s.changes:
			if c.kind == changeSync {
				s.commit(batch)
				batch = batch[:0]
				c.done <- s.Err()
				continue
			}
			batch = append(batch, c)
			if len(batch) == maxBatch {
				s.commit(batch)
				batch = batch[:0]
			}
		case now := <-ticker.C:
			s.commit(batch)
			batch = batch[:0]
			drops.log(s, now)
			if now.Sub(retained) >= retainInterval && !s.failed.Load() {
				if err := s.retain(now.UnixNano()); err != nil {
					s.fail(err)
				}
				retained = now
			}
		case <-s.quit:
			for {
				select {
				case c := <-s.changes:
					if c.kind == changeSync {
						c.done <- ErrClosed
						continue
					}
					batch = append(batch, c)
					if len(batch) == maxBatch {
						s.commit(batch)
						batch = batch[:0]
					}
				default:
					s.commit(batch)
					return
				}
			}
		}
	}
}

// dropsLogEvery bounds how often the writer says it dropped changes.
const dropsLogEvery = 10 * time.Second

// dropsLogged is what the writer last said of the changes dropped, and
// when.
type dropsLogged struct {
	n  uint64
	at time.Time
}

// log says, at most every dropsLogEvery, how many changes were dropped
// since it last did: the sink drops what the writer has no room for, on
// the event path, which says nothing. After a failure, fail has said why
// everything is dropped.
func (d *dropsLogged) log(s *Store, now time.Time) {
	n := s.Dropped()
	if n == d.n || s.opts.Logf == nil || s.failed.Load() || now.Sub(d.at) < dropsLogEvery {
		return
	}
	s.opts.Logf("history dropped %d changes (%d in all): its writer fell behind the events (a slow disk?)", n-d.n, n)
	d.n, d.at = n, now
}

// commit writes a batch in one transaction: bbolt writes the pages, syncs
// them, then writes and syncs the meta page that makes them visible, so a
// crash at any point leaves the last committed state.
func (s *Store) commit(batch []change) {
	if len(batch) == 0 {
		return
	}
	if s.failed.Load() {
		s.dropped.Add(uint64(len(batch)))
		return
	}
	apply := func(tx *bolt.Tx) error { return s.apply(tx, batch) }
	err := s.db.Update(apply)
	if errors.Is(err, berrors.ErrMaxSizeReached) {
		// Entries came faster than retention made room: make room now
		// and try once more.
		if err = s.shrink(true); err == nil {
			err = s.db.Update(apply)
		}
	}
	if err == nil {
		err = s.shrink(false)
	} else {
		s.dropped.Add(uint64(len(batch)))
	}
	if err != nil {
		s.fail(err)
	}
}

// txn is one commit's view of the buckets.
type txn struct {
	s                                          *Store
	holders, open, failed, owners, connections *bolt.Bucket
}

func (s *Store) apply(tx *bolt.Tx, batch []change) error {
	t := txn{
		s: s, holders: tx.Bucket(bucketHolders), open: tx.Bucket(bucketOpen), failed: tx.Bucket(bucketFailedBinds),
		owners: tx.Bucket(bucketOwnerChanges), connections: tx.Bucket(bucketConnections),
	}
	for _, b := range []*bolt.Bucket{t.failed, t.owners, t.connections} {
		b.FillPercent = appendFill
	}
	for i := range batch {
		if err := t.apply(&batch[i]); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) apply(c *change) error {
	switch c.kind {
	case changeBound:
		return t.bound(c)
	case changeListening:
		return t.listening(c)
	case changeOwner:
		return t.owner(c)
	case changeListenClosed:
		return t.listenClosed(c)
	case changeConnEnded:
		return t.connEnded(c)
	case changeSeen:
		return t.seen(c)
	case changeSeenAll:
		return t.seenAll(c)
	case changeBindFailed:
		f := FailedBind{TimeNs: c.timeNs, Socket: c.socket, Errno: c.errno, By: t.s.process(c)}
		return t.putEvent(t.failed, c.socket.Port, c.timeNs, f.encode(nil))
	case changeCounts:
		return t.addCounts(c)
	}
	return nil
}

// process is the owner a change names, with what Describe adds.
func (s *Store) process(c *change) Process {
	p := Process{PID: c.pid, Comm: c.comm.String()}
	if s.opts.Describe != nil && p.PID != 0 {
		s.opts.Describe(&p)
	}
	return p
}

// openHolder is a holder the open index lists: one that holds its port.
type openHolder struct {
	openKey []byte
	storedHolder
}

func (o *openHolder) holderKey() []byte { return o.openKey[socketPrefixLen:] }

// sameSocket reports whether the holder is of the change's socket.
func (o *openHolder) sameSocket(c *change) bool {
	return bytes.Equal(o.openKey[:socketPrefixLen], appendSocketPrefix(nil, &c.socket))
}

// openHolders lists the open holders of the change's protocol and port.
func (t *txn) openHolders(c *change) ([]openHolder, error) {
	prefix := appendSocketPrefix(nil, &c.socket)[:protoPortLen]
	var list []openHolder
	cur := t.open.Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		o, err := t.openHolder(k)
		if err != nil {
			return nil, err
		}
		list = append(list, o)
	}
	return list, nil
}

func (t *txn) openHolder(openKey []byte) (openHolder, error) {
	o := openHolder{openKey: bytes.Clone(openKey)}
	var err error
	o.storedHolder, err = decodeHolder(t.holders.Get(o.holderKey()))
	return o, err
}

// pick returns the open holder of the change's protocol and port that
// fits, the one that beats the others if better is set; nil if none fits.
func (t *txn) pick(c *change, fits func(o *openHolder) bool, better func(a, b *openHolder) bool) (*openHolder, error) {
	list, err := t.openHolders(c)
	if err != nil {
		return nil, err
	}
	var best *openHolder
	for i := range list {
		if o := &list[i]; fits(o) && (best == nil || better != nil && better(o, best)) {
			best = o
		}
	}
	return best, nil
}

// start stores a new holder and indexes it as open (unless it already
// ended).
func (t *txn) start(h *storedHolder) error {
	seq, err := t.holders.NextSequence()
	if err != nil {
		return err
	}
	h.run = t.s.run
	key := appendEventKey(nil, h.Socket.Port, h.FromNs, seq)
	if err := t.holders.Put(key, h.encode(nil)); err != nil {
		return err
	}
	if h.End != EndNone {
		return nil
	}
	return t.open.Put(append(appendSocketPrefix(nil, &h.Socket), key...), nil)
}

func (t *txn) update(o *openHolder) error {
	return t.holders.Put(o.holderKey(), o.encode(nil))
}

func (t *txn) end(o *openHolder, untilNs int64, end End) error {
	o.UntilNs, o.End = untilNs, end
	if err := t.update(o); err != nil {
		return err
	}
	return t.open.Delete(o.openKey)
}

func (t *txn) newHolder(c *change, via tracer.OwnerVia) storedHolder {
	return storedHolder{Holder: Holder{Socket: c.socket, Owner: t.s.process(c), Via: via, FromNs: c.timeNs}}
}

// bound starts a holder for a bound socket, unless its process already
// holds the address (more sockets of one holder: SO_REUSEPORT), ending
// the oldest bound-only holder of the port first if it has maxOpenBound.
func (t *txn) bound(c *change) error {
	list, err := t.openHolders(c)
	if err != nil {
		return err
	}
	var oldest *openHolder
	boundOnly := 0
	for i := range list {
		o := &list[i]
		if o.sameSocket(c) && o.Owner.PID == c.pid {
			return nil
		}
		if o.ListenNs == 0 {
			boundOnly++
			if oldest == nil || o.FromNs < oldest.FromNs {
				oldest = o
			}
		}
	}
	if boundOnly >= maxOpenBound {
		if err := t.end(oldest, c.timeNs, EndUnseen); err != nil {
			return err
		}
	}
	h := t.newHolder(c, tracer.OwnerBind)
	return t.start(&h)
}

// listening marks the process's bound socket as listening; a socket
// another process bound passes to the listener (handOver); else a holder
// starts.
func (t *txn) listening(c *change) error {
	o, err := t.pick(c,
		func(o *openHolder) bool { return o.sameSocket(c) && o.ListenNs == 0 },
		func(a, _ *openHolder) bool { return a.Owner.PID == c.pid })
	if err != nil {
		return err
	}
	if o != nil && o.Owner.PID == c.pid {
		o.ListenNs = c.timeNs
		return t.update(o)
	}
	h := t.newHolder(c, tracer.OwnerListen)
	h.ListenNs = c.timeNs
	if o != nil {
		return t.handOver(o, &h, tracer.OwnerListen)
	}
	return t.start(&h)
}

// handOver records that the socket of from passed to the process of to.
func (t *txn) handOver(from *openHolder, to *storedHolder, via tracer.OwnerVia) error {
	if err := t.end(from, to.FromNs, EndHandedOver); err != nil {
		return err
	}
	if err := t.start(to); err != nil {
		return err
	}
	oc := OwnerChange{TimeNs: to.FromNs, Socket: to.Socket, From: from.Owner, To: to.Owner, Via: via}
	return t.putEvent(t.owners, to.Socket.Port, to.FromNs, oc.encode(nil))
}

// owner hands the holder of c's socket that the previous owner held to the
// process that holds it now.
func (t *txn) owner(c *change) error {
	o, err := t.pick(c,
		func(o *openHolder) bool { return o.sameSocket(c) && o.Owner.PID != c.pid },
		func(a, _ *openHolder) bool { return a.Owner.PID == c.prevPID })
	if err != nil || o == nil {
		return err
	}
	h := t.newHolder(c, c.via)
	h.ListenNs = o.ListenNs
	return t.handOver(o, &h, c.via)
}

// listenClosed ends the listener's holder, its process's if several
// listen on the address.
func (t *txn) listenClosed(c *change) error {
	o, err := t.pick(c,
		func(o *openHolder) bool { return o.sameSocket(c) && o.ListenNs != 0 },
		func(a, _ *openHolder) bool { return a.Owner.PID == c.pid })
	if err != nil {
		return err
	}
	if o != nil {
		return t.end(o, c.timeNs, EndClosed)
	}
	// It listened before porttrace looked: keep who let go, and when.
	h := t.newHolder(c, c.via)
	h.FromNs, h.UntilNs, h.End = 0, c.timeNs, EndClosed
	return t.start(&h)
}

// connEnded ends the oldest bound socket the connection's process holds on
// the port: a socket bound before connect() makes the connection, from
// whatever local address.
func (t *txn) connEnded(c *change) error {
	o, err := t.pick(c,
		func(o *openHolder) bool {
			return o.ListenNs == 0 && o.Owner.PID == c.pid && o.Socket.NetNS == c.socket.NetNS
		},
		func(a, b *openHolder) bool { return a.FromNs < b.FromNs })
	if err != nil || o == nil {
		return err
	}
	return t.end(o, c.timeNs, EndClosed)
}

// seen continues the open holder of an earlier run that the snapshot
// found again, or starts one. A listener is one socket each (one LISTEN ->
// CLOSE ends it); a process's bound sockets on one address are one holder.
func (t *txn) seen(c *change) error {
	o, err := t.pick(c, func(o *openHolder) bool {
		return o.sameSocket(c) && o.Owner.PID == c.pid && (o.run != t.s.run || !c.listening)
	}, nil)
	if err != nil {
		return err
	}
	if o != nil {
		o.run = t.s.run
		if c.listening && o.ListenNs == 0 {
			o.ListenNs = c.timeNs
		}
		return t.update(o)
	}
	h := t.newHolder(c, tracer.OwnerSnapshot)
	if c.listening {
		h.ListenNs = c.timeNs
	}
	return t.start(&h)
}

// seenAll ends the open holders of earlier runs that the snapshot did not
// find again: they let go while porttrace was not watching.
func (t *txn) seenAll(c *change) error {
	var gone []openHolder
	cur := t.open.Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
		o, err := t.openHolder(k)
		if err != nil {
			return err
		}
		if o.run != t.s.run {
			gone = append(gone, o)
		}
	}
	for i := range gone {
		if err := t.end(&gone[i], c.timeNs, EndUnseen); err != nil {
			return err
		}
	}
	return nil
}

// putEvent stores an entry of a port at a time.
func (t *txn) putEvent(b *bolt.Bucket, port uint16, timeNs int64, value []byte) error {
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return b.Put(appendEventKey(nil, port, timeNs, seq), value)
}

func (t *txn) addCounts(c *change) error {
	key := appendCountKey(nil, c.socket.Port, c.minute)
	sum := c.counts
	if v := t.connections.Get(key); v != nil {
		old, err := decodeConnections(c.minute, v)
		if err != nil {
			return err
		}
		sum.Inbound.Opened += old.Inbound.Opened
		sum.Inbound.Closed += old.Inbound.Closed
		sum.Outbound.Opened += old.Outbound.Opened
		sum.Outbound.Closed += old.Outbound.Closed
	}
	return t.connections.Put(key, encodeConnections(nil, &sum))
}
