package main

import (
	"context"
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
// load on a watch done starting. A watch stopped before that leaves no
// file, written or half written.
func TestReadyFileWaitsForTheSockets(t *testing.T) {
	// Not t.TempDir: under wine, a file renamed into place by another
	// thread cannot be removed ("Invalid function"), which fails its
	// cleanup. Wine's prefix goes when the run ends.
	dir, err := os.MkdirTemp("", "porttrace-ready-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("cleaning up: %v", err)
		}
	})
	path := filepath.Join(dir, "ready")
	loop := correlate.NewLoop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, ready, err := serve(ctx, loop, path, cancel, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if names := dirNames(t, dir); len(names) != 1 || !strings.HasPrefix(names[0], ".porttrace-ready-") {
		t.Fatalf("before the loop has taken its snapshot: %q, want the ready file's temporary alone", names)
	}
	loop.Tick(time.Now().UnixNano()) // no snapshot waits: the loop is seeded
	for deadline := time.Now().Add(5 * time.Second); !slices.ContainsFunc(dirNames(t, dir), func(name string) bool { return name == "ready" }); time.Sleep(time.Millisecond) {
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
	if err := ready(); err != nil {
		t.Errorf("ready: %v", err)
	}

	stopped := filepath.Join(dir, "stopped")
	ctx, cancel = context.WithCancel(context.Background())
	stop, ready, err = serve(ctx, correlate.NewLoop(), stopped, cancel, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cancel()
	if err := ready(); err != nil {
		t.Errorf("ready: %v", err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"ready"}) {
		t.Errorf("after a watch stopped before it was seeded: %q, want the first watch's ready file alone", names)
	}
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
