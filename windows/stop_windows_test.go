package windows

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer/proc"
)

// TestStopTree: --tree's list holds a child's child; Stop leaves alone a
// process whose creation time is not the one asked for, and terminates
// the one that is.
func TestStopTree(t *testing.T) {
	parent, line := startRole(t, "parent", true)
	grandchildPID, err := strconv.Atoi(line)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p, err := os.FindProcess(grandchildPID); err == nil {
			p.Kill()
		}
	})
	root, err := Identify(uint32(parent.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	below, err := Descendants(root)
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := Identify(uint32(grandchildPID))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(below, grandchild.Same) {
		t.Fatalf("descendants of %v: %v, want %v among them", root, below, grandchild)
	}
	ctx := context.Background()
	reused := grandchild
	reused.StartNs -= uint64(time.Second) // the process that had the pid before
	if outcome, err := Stop(ctx, reused, time.Second); outcome != Gone || err != nil {
		t.Errorf("Stop of an earlier process with the pid: %v, %v; want %v", outcome, err, Gone)
	}
	if !running(t, grandchild.PID) {
		t.Fatal("the process that has the pid now was hit")
	}
	for _, id := range []proc.Identity{root, grandchild} {
		if outcome, err := Stop(ctx, id, 5*time.Second); outcome != Terminated || err != nil {
			t.Errorf("Stop(%v) = %v, %v; want %v", id, outcome, err, Terminated)
		}
		if outcome, err := Stop(ctx, id, time.Second); outcome != Gone || err != nil {
			t.Errorf("Stop(%v) again = %v, %v; want %v", id, outcome, err, Gone)
		}
	}
	if running(t, grandchild.PID) {
		t.Error("the terminated process still runs")
	}
	if _, err := Descendants(root); !errors.Is(err, proc.ErrExited) {
		t.Errorf("Descendants of a terminated process: %v, want %v", err, proc.ErrExited)
	}
	if state, err := parent.Process.Wait(); err != nil || state.ExitCode() != terminatedExitCode {
		t.Errorf("parent ended %v, %v; want exit status %d", state, err, terminatedExitCode)
	}
}

func TestStopRefusesTheKernel(t *testing.T) {
	if _, err := Stop(context.Background(), proc.Identity{PID: systemPID}, time.Second); err == nil || !strings.Contains(err.Error(), "kernel") {
		t.Errorf("Stop of pid 4: %v, want a refusal naming the kernel", err)
	}
}

// running says whether process pid has not exited. (It may be opened
// after its exit while another process, such as its parent, holds a
// handle to it.)
func running(t *testing.T, pid uint32) bool {
	h, err := xwin.OpenProcess(xwin.SYNCHRONIZE, false, pid)
	if err != nil {
		return false
	}
	defer xwin.CloseHandle(h)
	exited, err := waitExit(context.Background(), h, 0)
	if err != nil {
		t.Fatal(err)
	}
	return !exited
}
