package history

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/porttrace/porttrace/tracer"
)

// Defaults of Options: a busy host's history stays well under 100 MB.
const (
	DefaultMaxAge   = 30 * 24 * time.Hour
	DefaultMaxBytes = 64 << 20
	// MinMaxBytes is the smallest size limit Open takes: room for the
	// database's own pages and a few seconds of a busy host's entries.
	MinMaxBytes = 1 << 20
)

const (
	dbName   = "history.db"
	lockName = "history.lock"
	// formatVersion is the database's layout; Open refuses another.
	formatVersion = 1
	// maxAllocSize bounds how much bbolt grows the file by at a time (see
	// allocSize).
	maxAllocSize = 1 << 20
	// queueLen is how many changes may wait for the writer: over a second
	// of a bind storm.
	queueLen = 1 << 16
)

var (
	bucketHolders      = []byte("holders")
	bucketOpen         = []byte("open")
	bucketFailedBinds  = []byte("failed_binds")
	bucketOwnerChanges = []byte("owner_changes")
	bucketConnections  = []byte("connections")
	bucketMeta         = []byte("meta")
	allBuckets         = [][]byte{bucketHolders, bucketOpen, bucketFailedBinds, bucketOwnerChanges, bucketConnections, bucketMeta}

	metaFormat = []byte("format")
	metaRun    = []byte("run")
)

var errLocked = errors.New("locked")

// ErrClosed is returned by a Store's methods after Close.
var ErrClosed = errors.New("history is closed")

// Options tune a Store. The zero value takes the defaults.
type Options struct {
	// MaxAge is how long entries are kept; 0 means DefaultMaxAge. A holder
	// is kept while it holds its port, however old.
	MaxAge time.Duration
	// MaxBytes bounds the database file; 0 means DefaultMaxBytes. When
	// its entries fill most of it, the oldest go first.
	MaxBytes int64
	// Logf receives the one line that says history stopped (a full disk),
	// and, at most every 10 s, how many changes it dropped (its writer
	// behind).
	Logf func(format string, args ...any)
	// Describe, if set, adds what it knows of a process (user, executable,
	// command line, start time) to the facts a record gave. The writer
	// goroutine calls it, never the event loop; it must not block for
	// long.
	Describe func(p *Process)
}

// Store is porttrace's history: the ownership of ports over time, kept in
// a bbolt database under a data directory. It is a tracer.Sink: the event
// loop hands it records (Record and Tick, from that goroutine only), it
// turns them into changes and queues them for its writer goroutine without
// ever blocking, dropping and counting what does not fit. Queries may come
// from any goroutine.
type Store struct {
	dir  string
	opts Options
	db   *bolt.DB
	lock *os.File
	// run numbers this opening of the database (see storedHolder).
	run uint64

	sink    sinkState // the event loop's: only Record and Tick touch it
	changes chan change
	quit    chan struct{}
	done    chan struct{}
	closed  atomic.Bool
	// dropped counts changes that never reached the database.
	dropped atomic.Uint64
	failed  atomic.Bool
	errOnce sync.Once
	err     atomic.Pointer[error]
}

var _ tracer.Sink = (*Store)(nil)

// Open opens (creating it if need be) the history under dir and starts its
// writer. Only one Store may have dir open at a time, in any process.
// Close releases it.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxAge < 0 {
		return nil, fmt.Errorf("history retention %v is negative", opts.MaxAge)
	}
	if opts.MaxBytes < MinMaxBytes {
		return nil, fmt.Errorf("history size limit %d bytes is under the minimum of %d", opts.MaxBytes, MinMaxBytes)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the data directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening the history lock: %w", err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("history in %s is in use by another porttrace: stop it or choose another --data-dir", dir)
		}
		return nil, fmt.Errorf("locking the history in %s: %w", dir, err)
	}
	s := &Store{
		dir: dir, opts: opts, lock: lock,
		changes: make(chan change, queueLen),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := s.open(); err != nil {
		lock.Close()
		return nil, err
	}
	s.sink.init()
	go s.write()
	return s, nil
}

func (s *Store) path() string { return filepath.Join(s.dir, dbName) }

// open opens the database, applies retention, compacts the file if it is
// over the size limit (a limit lowered since the last run) and starts this
// run.
func (s *Store) open() (err error) {
	if s.db, err = openDB(s.path(), s.opts.MaxBytes); err != nil {
		return err
	}
	defer func() {
		if err != nil && s.db != nil {
			s.db.Close()
		}
	}()
	if err := s.db.Update(s.startRun); err != nil {
		return fmt.Errorf("opening the history in %s: %w", s.dir, err)
	}
	if err := s.retain(time.Now().UnixNano()); err != nil {
		return fmt.Errorf("opening the history in %s: %w", s.dir, err)
	}
	if fileSize(s.path()) > s.opts.MaxBytes {
		if err := s.compact(); err != nil {
			return err
		}
	}
	// Only now the hard limit: retention and compaction may need to
	// write past it.
	s.db.MaxSize = int(s.opts.MaxBytes)
	return nil
}

// startRun checks the database's format, creates what is missing and
// numbers this run.
func (s *Store) startRun(tx *bolt.Tx) error {
	if meta := tx.Bucket(bucketMeta); meta != nil {
		if v := meta.Get(metaFormat); len(v) == 8 && binary.BigEndian.Uint64(v) != formatVersion {
			return fmt.Errorf("it has format %d and this porttrace reads format %d: move it away", binary.BigEndian.Uint64(v), formatVersion)
		}
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	if err := meta.Put(metaFormat, binary.BigEndian.AppendUint64(nil, formatVersion)); err != nil {
		return err
	}
	if v := meta.Get(metaRun); len(v) == 8 {
		s.run = binary.BigEndian.Uint64(v)
	}
	s.run++
	return meta.Put(metaRun, binary.BigEndian.AppendUint64(nil, s.run))
}

// allocSize is how much bbolt grows the file by at a time, once it is
// past that size: the file stays within it of its used pages.
func allocSize(maxBytes int64) int {
	return int(min(maxBytes/16, maxAllocSize))
}

func openDB(path string, maxBytes int64) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o640, &bolt.Options{
		// The lock file already excludes other porttraces; this only
		// guards against anything else holding the file.
		Timeout: time.Second,
		// The freelist is rebuilt on open instead of written at every
		// commit: less written per second, a scan at start.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.AllocSize = allocSize(maxBytes)
	return db, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Size is the size of the database file in bytes.
func (s *Store) Size() int64 { return fileSize(s.path()) }

// Dropped is how many changes never reached the database: the writer
// could not keep up, or history stopped.
func (s *Store) Dropped() uint64 { return s.dropped.Load() }

// Err is the error that stopped history, if any.
func (s *Store) Err() error {
	if e := s.err.Load(); e != nil {
		return *e
	}
	return nil
}

// fail stops history for good: one line to Logf, and every later change is
// dropped, while queries go on answering from what was written.
func (s *Store) fail(err error) {
	s.errOnce.Do(func() {
		err = fmt.Errorf("writing history to %s: %w", s.path(), err)
		s.err.Store(&err)
		s.failed.Store(true)
		if s.opts.Logf != nil {
			s.opts.Logf("history stopped, porttrace goes on without it: %v", err)
		}
	})
}

// Sync waits until the changes handed over so far by Record and Tick are
// in the database, and returns the error that stopped history, if any.
// Connection counts wait on the sink until a Tick or the next second of
// records: call Tick first to include them.
func (s *Store) Sync() error { return s.SyncContext(context.Background()) }

// SyncContext is Sync giving up when ctx ends (a disk that hangs in a
// commit), with ctx's error.
func (s *Store) SyncContext(ctx context.Context) error {
	done := make(chan error, 1) // the writer never blocks on a caller gone
	select {
	case s.changes <- change{kind: changeSync, done: done}:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is queued, stops the writer and closes the database.
// Call it once the event loop has stopped.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	s.sink.flushCounts(s)
	close(s.quit)
	<-s.done
	err := s.db.Close()
	s.lock.Close()
	if werr := s.Err(); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("closing %s: %w", s.path(), err)
	}
	return nil
}
