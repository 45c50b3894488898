package history

import (
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// view runs fn in a read transaction, which sees the last commit and never
// waits for the writer.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.View(fn)
}

// timeRange turns a query's times into nanoseconds: a zero since is the
// beginning, a zero until the end of time.
func timeRange(since, until time.Time) (sinceNs, untilNs int64) {
	untilNs = math.MaxInt64
	if !since.IsZero() {
		sinceNs = since.UnixNano()
	}
	if !until.IsZero() {
		untilNs = until.UnixNano()
	}
	return sinceNs, untilNs
}

// Query returns what history knows of port between since and until (zero
// times leave that end open): the holders that held it at any time in
// that range, and the failed binds, owner changes and connection counts
// that fell in it.
func (s *Store) Query(port uint16, since, until time.Time) (Result, error) {
	sinceNs, untilNs := timeRange(since, until)
	r := Result{Port: port, SinceNs: sinceNs, UntilNs: untilNs, Dropped: s.Dropped()}
	err := s.view(func(tx *bolt.Tx) error {
		err := scanPort(tx.Bucket(bucketHolders), port, 0, untilNs, func(v []byte) error {
			h, err := decodeHolder(v)
			if err == nil && (h.End == EndNone || h.UntilNs >= sinceNs) {
				r.Holders = append(r.Holders, h.Holder)
			}
			return err
		})
		if err != nil {
			return err
		}
		if err := collect(tx.Bucket(bucketFailedBinds), port, sinceNs, untilNs, decodeFailedBind, &r.FailedBinds); err != nil {
			return err
		}
		if err := collect(tx.Bucket(bucketOwnerChanges), port, sinceNs, untilNs, decodeOwnerChange, &r.OwnerChanges); err != nil {
			return err
		}
		c := tx.Bucket(bucketConnections).Cursor()
		from, to := sinceNs/60e9, untilNs/60e9
		for k, v := c.Seek(appendCountKey(nil, port, from)); k != nil && keyPort(k) == port && keyTime(k) <= to; k, v = c.Next() {
			counts, err := decodeConnections(keyTime(k), v)
			if err != nil {
				return err
			}
			r.Connections = append(r.Connections, counts)
		}
		return nil
	})
	return r, err
}

// scanPort passes fn the values of port's event keys from sinceNs to
// untilNs, in time order.
func scanPort(b *bolt.Bucket, port uint16, sinceNs, untilNs int64, fn func(v []byte) error) error {
	c := b.Cursor()
	for k, v := c.Seek(appendEventKey(nil, port, sinceNs, 0)); k != nil && keyPort(k) == port && keyTime(k) <= untilNs; k, v = c.Next() {
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

// collect appends to dst the decoded values of port's event keys from
// sinceNs to untilNs.
func collect[T any](b *bolt.Bucket, port uint16, sinceNs, untilNs int64, decode func([]byte) (T, error), dst *[]T) error {
	return scanPort(b, port, sinceNs, untilNs, func(v []byte) error {
		x, err := decode(v)
		*dst = append(*dst, x)
		return err
	})
}

// LastHolder is who holds port now, or held it last: among the holders
// still holding it, the one that started last; else the one that let go
// last. ok is false when history knows of no holder.
func (s *Store) LastHolder(port uint16) (h Holder, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		return scanPort(tx.Bucket(bucketHolders), port, 0, math.MaxInt64, func(v []byte) error {
			cand, err := decodeHolder(v)
			if err != nil {
				return err
			}
			switch {
			case !ok, cand.Held() && (!h.Held() || cand.FromNs >= h.FromNs), !cand.Held() && !h.Held() && cand.UntilNs >= h.UntilNs:
				h, ok = cand.Holder, true
			}
			return nil
		})
	})
	return h, ok, err
}

// RecentFailedBinds returns port's last n failed binds, oldest first.
func (s *Store) RecentFailedBinds(port uint16, n int) ([]FailedBind, error) {
	var list []FailedBind
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketFailedBinds).Cursor()
		k, v := c.Seek(appendEventKey(nil, port, math.MaxInt64, math.MaxUint32))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && keyPort(k) == port && len(list) < n; k, v = c.Prev() {
			f, err := decodeFailedBind(v)
			if err != nil {
				return err
			}
			list = append(list, f)
		}
		return nil
	})
	slices.Reverse(list)
	return list, err
}
