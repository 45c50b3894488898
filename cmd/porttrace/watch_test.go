package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer/correlate"
)

// TestReadyFileWaitsForTheSockets: the ready file appears once the loop
// has taken the sockets older than the watch, not as soon as the probes
// are attached: a script waiting for it (make bench's storm) starts its
// load on a watch done starting. One an earlier run left is removed at
// once: it would say ready too soon. A watch stopped before it is seeded
// leaves no file, written or half written.
func TestReadyFileWaitsForTheSockets(t *testing.T) {
	dir := scratchDir(t)
	path := filepath.Join(dir, "ready")
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err) // an earlier run's
	}
	file, err := newReadyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	loop := correlate.NewLoop()
	stop, readyErr := serve(loop, file, func() {}, io.Discard)
	defer stop()
	if names := dirNames(t, dir); len(names) != 1 || !strings.HasPrefix(names[0], ".porttrace-ready-") {
		t.Fatalf("before the loop has taken its snapshot: %q, want the ready file's temporary alone (an earlier run's removed)", names)
	}
	loop.Tick(time.Now().UnixNano()) // no snapshot waits: the loop is seeded
	for deadline := time.Now().Add(5 * time.Second); !slices.Contains(dirNames(t, dir), "ready"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no ready file 5 s after the loop was seeded")
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("ready file holds %q, want this process's pid", got)
	}
	if err := readyErr(); err != nil {
		t.Errorf("ready: %v", err)
	}

	// A watch stopped before it is seeded: readyErr is what it calls then.
	file, err = newReadyFile(filepath.Join(dir, "stopped"))
	if err != nil {
		t.Fatal(err)
	}
	stop, readyErr = serve(correlate.NewLoop(), file, func() {}, io.Discard)
	defer stop()
	if err := readyErr(); err != nil {
		t.Errorf("ready: %v", err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"ready"}) {
		t.Errorf("after a watch stopped before it was seeded: %q, want the first watch's ready file alone", names)
	}
}

// TestReadyFileThatIsADirectory: a ready file path that names a directory
// is refused before the watch starts, and the directory left be.
func TestReadyFileThatIsADirectory(t *testing.T) {
	dir := scratchDir(t)
	if _, err := newReadyFile(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("a directory for the ready file: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the directory: %v", err)
	}
}

// scratchDir is a directory the test removes when it ends. Not
// t.TempDir: under wine, a directory or a file that was looked up (Lstat)
// and then renamed or left in place cannot always be removed ("Invalid
// function"), which would fail its cleanup. Wine's prefix goes when the
// run ends.
func scratchDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "porttrace-ready-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("cleaning up: %v", err)
		}
	})
	return dir
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}
