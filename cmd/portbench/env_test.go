//go:build linux

package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLockRunRefusesASecondHarness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "portbench.lock")
	first, err := lockRun(path)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	if _, err := lockRun(path); err == nil || !strings.Contains(err.Error(), "another portbench is running") {
		t.Fatalf("second lock while the first is held: got %v, want another portbench is running", err)
	}
	first.Close()
	again, err := lockRun(path)
	if err != nil {
		t.Fatalf("lock after the first was released: %v", err)
	}
	again.Close()
}
