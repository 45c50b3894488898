package history

import (
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	old := -40 * 24 * time.Hour
	feed(t, s,
		// 40 days ago: a holder that let go, one that still holds its
		// port, a failed bind, a connection.
		listenRec(at(old), 1000, 1, "gone"),
		listenCloseRec(at(old+time.Second), 1000, 1, "gone"),
		listenRec(at(old), 2000, 2, "stays"),
		bindRec(at(old), tracer.ProtoTCP, 2000, 3, "late", 98),
		stateRec(at(old), tracer.StateSynRecv, tracer.StateEstablished, 2000, 50000, 2, tracer.OwnerAccept),
		// Recent ones.
		listenRec(at(0), 1000, 4, "recent"),
		bindRec(at(0), tracer.ProtoTCP, 2000, 5, "recent", 98),
		stateRec(at(0), tracer.StateSynRecv, tracer.StateEstablished, 2000, 50001, 2, tracer.OwnerAccept),
	)
	if r := query(t, s, 2000); len(r.FailedBinds) != 2 || len(r.Connections) != 2 {
		t.Fatalf("before retention: %+v", r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Retention runs at Open, and every minute after.
	s = openStore(t, dir, Options{})
	r := query(t, s, 1000)
	if len(r.Holders) != 1 || r.Holders[0].Owner.PID != 4 {
		t.Errorf("port 1000: %+v, want only the recent holder", r.Holders)
	}
	r = query(t, s, 2000)
	if len(r.Holders) != 1 || r.Holders[0].Owner.PID != 2 || !r.Holders[0].Held() {
		t.Errorf("port 2000: %+v, want the old holder that still holds it", r.Holders)
	}
	if len(r.FailedBinds) != 1 || r.FailedBinds[0].By.PID != 5 || len(r.Connections) != 1 || r.Connections[0].MinuteNs != at(0) {
		t.Errorf("port 2000: %+v, want only the recent failed bind and connection", r)
	}

	// A shorter retention takes more.
	s.Close()
	s = openStore(t, dir, Options{MaxAge: time.Minute})
	if r := query(t, s, 2000); len(r.FailedBinds) != 0 || len(r.Connections) != 0 {
		t.Errorf("with a minute's retention: %+v, want no failed binds or connections", r)
	}
}

// fillFailedBinds feeds n failed binds of about 300 bytes each (with the
// facts Describe adds), a second apart from first on, spread over ports,
// and checks after each batch that the file is within limit and that,
// once the entries filled it to the low mark, retention never takes them
// much below it.
func fillFailedBinds(t *testing.T, s *Store, first, n int, limit int64) {
	t.Helper()
	_, low := s.sizeMarks()
	filled := false
	for i := first; i < first+n; i++ {
		r := bindRec(at(time.Duration(i)*time.Second), tracer.ProtoTCP, uint16(1000+i%100), uint32(i), "filler", 98)
		s.Record(&r)
		if i%500 == 499 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			if size := s.Size(); size > limit {
				t.Fatalf("after %d entries the file is %d bytes, over the limit of %d", i+1, size, limit)
			}
			used := s.usedBytes()
			if filled && used < low/2 {
				t.Fatalf("after %d entries retention left %d bytes in use, under half the low mark of %d", i+1, used, low)
			}
			filled = filled || used >= low
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}

var longFacts = Options{Describe: func(p *Process) { p.Cmdline = strings.Repeat("x", 250) }}

// failedBindPIDs lists the pids of the failed binds kept, oldest first
// per port.
func failedBindPIDs(t *testing.T, s *Store) map[uint32]bool {
	t.Helper()
	pids := map[uint32]bool{}
	for port := uint16(1000); port < 1100; port++ {
		r := query(t, s, port)
		for _, f := range r.FailedBinds {
			pids[f.By.PID] = true
		}
	}
	return pids
}

// TestRetentionBySize: the file never passes MaxBytes; the oldest entries
// go, the newest stay, and what is kept is still a good part of the limit.
func TestRetentionBySize(t *testing.T) {
	opts := longFacts
	opts.MaxBytes = 4 << 20
	s := openStore(t, t.TempDir(), opts)
	// A holder whose start porttrace did not see is at time 0: it must
	// not make retention take everything in one step.
	feed(t, s, listenCloseRec(at(0), 9000, 1, "old"))
	const n = 60000 // about 18 MB of entries
	fillFailedBinds(t, s, 0, n, opts.MaxBytes)
	if s.Dropped() != 0 || s.Err() != nil {
		t.Fatalf("dropped %d, error %v", s.Dropped(), s.Err())
	}
	pids := failedBindPIDs(t, s)
	if !pids[n-1] || pids[0] {
		t.Errorf("kept the newest: %v, the oldest: %v; want only the newest", pids[n-1], pids[0])
	}
	// About 300 bytes an entry in pages packed to 90%; the low mark is
	// 1.5 MiB.
	if len(pids) < 3000 {
		t.Errorf("kept %d entries of %d: retention took too much", len(pids), n)
	}
	t.Logf("file %d bytes, %d entries kept", s.Size(), len(pids))
}

// TestCompactOnLowerLimit: a size limit lowered between runs is met at
// Open, by compacting into a new file.
func TestCompactOnLowerLimit(t *testing.T) {
	dir := t.TempDir()
	opts := longFacts
	opts.MaxBytes = 16 << 20
	s := openStore(t, dir, opts)
	fillFailedBinds(t, s, 0, 30000, opts.MaxBytes)
	before := s.Size()
	s.Close()
	if before <= 4<<20 {
		t.Fatalf("the file is %d bytes: too small to test", before)
	}

	opts.MaxBytes = 4 << 20
	s = openStore(t, dir, opts)
	if size := s.Size(); size > opts.MaxBytes {
		t.Errorf("after Open with a %d-byte limit the file is %d bytes (was %d)", opts.MaxBytes, size, before)
	}
	if pids := failedBindPIDs(t, s); !pids[29999] || pids[0] {
		t.Errorf("kept %d entries; want the newest and not the oldest", len(pids))
	}
	// And it goes on within the new limit.
	fillFailedBinds(t, s, 30000, 10000, opts.MaxBytes)
}
