package history

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/porttrace/porttrace/tracer"
)

// The kill -9 test runs the test binary again as a writer that the test
// kills: PORTTRACE_HISTORY_WRITER names its data directory.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PORTTRACE_HISTORY_WRITER"); dir != "" {
		if err := writeUntilKilled(dir); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// writeUntilKilled records a failed bind every 200µs or so, the pid
// numbering them and the time the wall clock's, until it is killed.
func writeUntilKilled(dir string) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		now := time.Now().UnixNano()
		r := bindRec(now, tracer.ProtoTCP, uint16(1000+i%100), uint32(i), "writer", 98)
		s.Record(&r)
		s.Tick(now)
		if i == 0 {
			if err := s.Sync(); err != nil {
				return err
			}
			fmt.Println("ready")
		}
		if i%50 == 49 {
			time.Sleep(10 * time.Millisecond)
		}
		if s.Dropped() != 0 {
			return errors.New("the writer dropped changes: the test would find gaps")
		}
	}
}

// lossBound is what a kill -9 may lose: the last second, as promised, and
// half a second for fsync and scheduling on a busy machine.
const lossBound = 1500 * time.Millisecond

func TestKill9LosesUnderASecond(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PORTTRACE_HISTORY_WRITER="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Process.Kill()
			t.Fatal("the writer did not start")
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the writer did not start in 30s")
	}
	time.Sleep(3 * time.Second)
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the writer ended with %v before the kill", err)
	}

	s := openStore(t, dir, Options{})
	checkConsistent(t, s)
	pids := failedBindPIDs(t, s)
	var last FailedBind
	for port := uint16(1000); port < 1100; port++ {
		if f, _ := s.RecentFailedBinds(port, 1); len(f) == 1 && f[0].TimeNs > last.TimeNs {
			last = f[0]
		}
	}
	for pid := range last.By.PID {
		if !pids[pid] {
			t.Fatalf("failed bind %d is missing, %d is there", pid, last.By.PID)
		}
	}
	lost := killed.Sub(time.Unix(0, last.TimeNs))
	t.Logf("%d failed binds kept, the last %v before the kill", len(pids), lost)
	if lost > lossBound {
		t.Errorf("the kill lost the last %v, more than %v", lost, lossBound)
	}
}

// checkConsistent runs bbolt's own consistency check on the database.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Errorf("the database is not consistent: %v", err)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI must run the privileged tests as root")
		}
		t.Skip("needs root")
	}
}

// TestFullDisk: on a full file system history stops with one logged line;
// the sink goes on taking records without blocking, and queries answer
// from what was written.
func TestFullDisk(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mounting a small tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)

	var log logLines
	opts := longFacts
	opts.Logf = log.logf
	s := openStore(t, dir, opts)
	i := 0
	for ; s.Err() == nil; i++ {
		if i == 100000 {
			t.Fatal("100000 failed binds of 300 bytes fit in 512 KiB")
		}
		r := bindRec(at(time.Duration(i)*time.Millisecond), tracer.ProtoTCP, 8080, uint32(i), "filler", 98)
		s.Record(&r)
		if i%500 == 499 {
			s.Sync()
		}
	}
	if !errors.Is(s.Err(), syscall.ENOSPC) {
		t.Errorf("history stopped with %v, want ENOSPC", s.Err())
	}
	// The sink takes more without blocking (a block would hang here).
	before := s.Dropped()
	for j := range 100000 {
		r := bindRec(at(time.Duration(i+j)*time.Millisecond), tracer.ProtoTCP, 8080, uint32(i+j), "more", 98)
		s.Record(&r)
		s.Tick(r.TimeNs)
	}
	if s.Dropped()-before != 100000 {
		t.Errorf("dropped %d of 100000 records after the disk filled", s.Dropped()-before)
	}
	if err := s.Sync(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Sync after the disk filled: %v", err)
	}
	t.Logf("after %d failed binds: %q", i, log.lines)
	if log.count() != 1 {
		t.Errorf("logged %q, want one line", log.lines)
	} else if !strings.Contains(log.lines[0], "history stopped") {
		t.Errorf("logged %q", log.lines[0])
	}
	if res, err := s.Query(8080, time.Time{}, time.Time{}); err != nil || res.Dropped != s.Dropped() {
		t.Errorf("a query after the disk filled says %d dropped (%v), want %d", res.Dropped, err, s.Dropped())
	}
	f, err := s.RecentFailedBinds(8080, 1)
	if err != nil || len(f) != 1 {
		t.Errorf("a query after the disk filled: %v, %v", f, err)
	}
	checkConsistent(t, s)
}
