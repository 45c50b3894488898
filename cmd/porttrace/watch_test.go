package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
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
	dir := t.TempDir()
	path := filepath.Join(dir, "ready")
	loop := correlate.NewLoop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, ready, err := serve(ctx, loop, path, cancel, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, err := os.Stat(path); err == nil {
		t.Fatal("the ready file is there before the loop has taken its snapshot")
	}
	loop.Tick(time.Now().UnixNano()) // no snapshot waits: the loop is seeded
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(path)
		if err == nil {
			if got := strings.TrimSpace(string(b)); got != strconv.Itoa(os.Getpid()) {
				t.Errorf("ready file holds %q, want this process's pid", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no ready file 5 s after the loop was seeded")
		}
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
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("after a watch stopped before it was seeded: %v, want the first watch's ready file alone", entries)
	}
}
