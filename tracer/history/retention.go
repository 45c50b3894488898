package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// How the file stays under MaxBytes: bbolt never shrinks its file, but it
// reuses the pages that deletions free, and it grows the file only when no
// free page is left, by allocSize past what it needs. So the writer keeps
// the pages in use (the file's pages less the free ones) under a high-water
// mark of the limit, deleting the oldest entries across all ports when they
// pass it, and the file stops growing. The marks leave room for
// copy-on-write: a transaction writes every page it changes anew and frees
// the old ones only once it has committed, and a deletion changes a page
// at the front of every port it reaches. bbolt's MaxSize makes the limit
// hard: a commit that would grow the file past it fails, and the writer
// then frees room and tries once more. A limit lowered between runs is met
// at Open by compacting into a new file.
const (
	// deleteKeys and deletePorts bound one deletion transaction, so that
	// its copy-on-write pages fit in the room the marks leave; a deletion
	// that finds no room halves them.
	deleteKeys  = 1 << 13
	deletePorts = 1 << 7
	// cutoffSteps is in how many steps a size-driven deletion moves its
	// cutoff over the time the entries cover.
	cutoffSteps = 8
)

// usedBytes is what the database's pages hold: its size less its free
// pages.
func (s *Store) usedBytes() int64 {
	var size int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	st := s.db.Stats()
	return size - int64(st.FreePageN+st.PendingPageN)*int64(s.db.Info().PageSize)
}

// sizeMarks are the levels of pages in use past which entries are deleted
// (high) and down to which they are (low).
func (s *Store) sizeMarks() (high, low int64) {
	limit := s.opts.MaxBytes - int64(allocSize(s.opts.MaxBytes))
	return limit * 6 / 10, limit * 45 / 100
}

// retain deletes what is past MaxAge, then what size demands.
func (s *Store) retain(nowNs int64) error {
	if err := s.deleteBefore(nowNs - int64(s.opts.MaxAge)); err != nil {
		return err
	}
	return s.shrink(false)
}

// shrink deletes the oldest entries of every port while the pages in use
// are over the low mark, once they passed the high one (or at once when
// urgent), moving a cutoff forward from the oldest entry in steps over the
// time the entries cover.
func (s *Store) shrink(urgent bool) error {
	high, low := s.sizeMarks()
	used := s.usedBytes()
	if used <= high && !urgent {
		return nil
	}
	oldest, newest, err := s.timeSpan()
	if err != nil {
		return fmt.Errorf("finding the oldest history: %w", err)
	}
	step := max((newest-oldest)/cutoffSteps, 1)
	for cutoff := oldest + step; used > low && cutoff-step <= newest; cutoff += step {
		if err := s.deleteBefore(cutoff); err != nil {
			return err
		}
		used = s.usedBytes()
	}
	return nil
}

// timeSpan is the time of the oldest and the newest entry's key (for a
// holder, its start), leaving out time 0.
func (s *Store) timeSpan() (oldest, newest int64, err error) {
	oldest, newest = math.MaxInt64, math.MinInt64
	err = s.db.View(func(tx *bolt.Tx) error {
		for _, name := range timedBuckets {
			c := tx.Bucket(name).Cursor()
			for k, _ := c.First(); k != nil; k, _ = seekNextPort(c, k) {
				// Holders porttrace only saw end are at time 0: they go
				// by their end, and would stretch the steps over decades.
				for k != nil && keyTimeNs(k) == 0 {
					k, _ = c.Next()
				}
				if k == nil {
					break
				}
				oldest = min(oldest, keyTimeNs(k))
			}
			for k, _ := c.Last(); k != nil; k, _ = seekPreviousPort(c, k) {
				newest = max(newest, keyTimeNs(k))
			}
		}
		return nil
	})
	return oldest, newest, err
}

// timedBuckets are those whose keys are port and time.
var timedBuckets = [][]byte{bucketHolders, bucketFailedBinds, bucketOwnerChanges, bucketConnections}

// keyTimeNs is a key's time in nanoseconds.
func keyTimeNs(k []byte) int64 {
	if len(k) == countKeyLen {
		return keyTime(k) * 60e9
	}
	return keyTime(k)
}

// seekNextPort moves c to the first key of the port after k's.
func seekNextPort(c *bolt.Cursor, k []byte) ([]byte, []byte) {
	port := keyPort(k)
	if port == math.MaxUint16 {
		return nil, nil
	}
	return c.Seek(binary.BigEndian.AppendUint16(nil, port+1))
}

// seekPreviousPort moves c to the last key of the port before k's.
func seekPreviousPort(c *bolt.Cursor, k []byte) ([]byte, []byte) {
	c.Seek(binary.BigEndian.AppendUint16(nil, keyPort(k)))
	return c.Prev()
}

// deleteBefore deletes the entries older than cutoffNs: holders that let
// go before it (never one that still holds its port), and failed binds,
// owner changes and connection counts from before it.
func (s *Store) deleteBefore(cutoffNs int64) error {
	keys, ports := deleteKeys, deletePorts
	for _, name := range timedBuckets {
		for more := true; more; {
			var err error
			more, err = s.deleteOld(name, cutoffNs, keys, ports)
			if errors.Is(err, berrors.ErrMaxSizeReached) && ports > 1 {
				keys, ports, more = max(keys/2, 1), ports/2, true
				continue
			}
			if err != nil {
				return fmt.Errorf("deleting old history: %w", err)
			}
		}
	}
	return nil
}

// deleteOld deletes, in one transaction, up to maxKeys old entries of one
// bucket from up to maxPorts ports, and reports whether it stopped at
// those limits. Each port's old entries are at the front of its key range;
// the holders there that still hold their port, or let go after the
// cutoff, stay.
func (s *Store) deleteOld(name []byte, cutoffNs int64, maxKeys, maxPorts int) (more bool, err error) {
	var old [][]byte
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		holders := bytes.Equal(name, bucketHolders)
		ports := 0
		c := b.Cursor()
		for k, v := c.First(); k != nil; {
			if len(old) == maxKeys {
				more = true
				break
			}
			if keyTimeNs(k) >= cutoffNs {
				k, v = seekNextPort(c, k)
				continue
			}
			if holders {
				h, err := decodeHolder(v)
				if err != nil {
					return err
				}
				if h.End == EndNone || h.UntilNs >= cutoffNs {
					k, v = c.Next()
					continue
				}
			}
			if len(old) == 0 || keyPort(old[len(old)-1]) != keyPort(k) {
				if ports == maxPorts {
					more = true
					break
				}
				ports++
			}
			old = append(old, bytes.Clone(k))
			k, v = c.Next()
		}
		if len(old) == 0 {
			return errNothingToDelete // no commit, no sync
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errNothingToDelete) {
		return false, nil
	}
	return more, err
}

var errNothingToDelete = errors.New("nothing to delete")

// compact rewrites the database into a new file holding only its used
// pages, and puts it in place of the old one.
func (s *Store) compact() error {
	tmp := s.path() + ".compact"
	if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing %s: %w", tmp, err)
	}
	dst, err := openDB(tmp, s.opts.MaxBytes)
	if err != nil {
		return fmt.Errorf("compacting the history: %w", err)
	}
	err = bolt.Compact(dst, s.db, 16<<20)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.db.Close()
		s.db = nil
	}
	if err == nil {
		err = os.Rename(tmp, s.path())
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compacting the history: %w", err)
	}
	s.db, err = openDB(s.path(), s.opts.MaxBytes)
	return err
}
