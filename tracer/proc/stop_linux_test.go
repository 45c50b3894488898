package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// stopRole, when set to "PID START_NS", makes the test binary a process
// that tries to stop that process and reports how it went (see
// TestStopNotPermitted).
const stopRole = "PORTTRACE_PROC_TEST_STOP"

func TestMain(m *testing.M) {
	if target := os.Getenv(stopRole); target != "" {
		var id Identity
		fmt.Sscan(target, &id.PID, &id.StartNs)
		out, err := Stop(context.Background(), id, time.Second)
		fmt.Printf("%v; %v; permission error %v\n", out, err, errors.Is(err, os.ErrPermission))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// signalled is the signal that ended a reaped child, 0 if none did.
func signalled(c *child) syscall.Signal {
	if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

func TestStopTerminates(t *testing.T) {
	c := startChild(t, "sleep", "sleep", "1000")
	out, err := Stop(t.Context(), c.id, time.Minute)
	c.Wait()
	if out != Terminated || err != nil || signalled(c) != syscall.SIGTERM {
		t.Errorf("Stop: %v, %v; the child ended by %v; want terminated by SIGTERM", out, err, signalled(c))
	}
}

func TestStopKillsWhatIgnoresTerm(t *testing.T) {
	// An ignored signal stays ignored across exec.
	c := startChild(t, "sleep", "sh", "-c", `trap "" TERM; exec sleep 1000`)
	out, err := Stop(t.Context(), c.id, 100*time.Millisecond)
	c.Wait()
	if out != Killed || err != nil || signalled(c) != syscall.SIGKILL {
		t.Errorf("Stop: %v, %v; the child ended by %v; want killed by SIGKILL", out, err, signalled(c))
	}
}

// TestStopLeavesReusedPid: a process with the target's pid that started at
// another time is not the target, and is left alone.
func TestStopLeavesReusedPid(t *testing.T) {
	c := startChild(t, "sleep", "sleep", "1000")
	for _, target := range []Identity{
		{PID: c.id.PID, StartNs: c.id.StartNs - 3*tickNs}, // the one that exited before it
		{PID: c.id.PID, StartNs: c.id.StartNs + 3*tickNs},
	} {
		out, err := Stop(t.Context(), target, time.Minute)
		if out != Gone || err != nil {
			t.Errorf("Stop(%+v) of %+v: %v, %v; want already gone", target, c.id, out, err)
		}
	}
	if now, err := Identify(c.id.PID); err != nil || now != c.id {
		t.Errorf("the child is %+v, %v after Stop refused it", now, err)
	}

	c.Process.Kill()
	c.Wait()
	if out, err := Stop(t.Context(), c.id, time.Minute); out != Gone || err != nil {
		t.Errorf("Stop of a process reaped: %v, %v; want already gone", out, err)
	}
}

func TestStopCancelled(t *testing.T) {
	c := startChild(t, "sleep", "sh", "-c", `trap "" TERM; exec sleep 1000`)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	out, err := Stop(ctx, c.id, time.Hour)
	if !errors.Is(err, context.Canceled) || out != 0 {
		t.Errorf("Stop cancelled while waiting: %v, %v; want context.Canceled", out, err)
	}
}

// TestStopNotPermitted: a user who may not signal the process is told so.
func TestStopNotPermitted(t *testing.T) {
	needRoot(t)
	c := startChild(t, "sleep", "sleep", "1000")
	// The test binary sits in a directory only its builder may enter:
	// copy it where nobody may run it.
	dir, err := os.MkdirTemp("", "porttrace-proc-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	bin := filepath.Join(dir, "proc.test")
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), stopRole+"="+strconv.FormatUint(uint64(c.id.PID), 10)+" "+strconv.FormatUint(c.id.StartNs, 10))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, got)
	}
	if string(got) != "unknown; stop pid "+itoa(c.id.PID)+": SIGTERM: operation not permitted (run porttrace as root, or as the process's user); permission error true\n" {
		t.Errorf("nobody stopping root's process: %q", got)
	}
	if now, err := Identify(c.id.PID); err != nil || now != c.id {
		t.Errorf("the child is %+v, %v", now, err)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestDescendants lists a forked tree, parents first, by both ways of
// finding children, and stops it that way.
func TestDescendants(t *testing.T) {
	c := startChild(t, "sh", "sh", "-c", `sleep 1000 & sh -c "sleep 1001 & wait" & wait`)
	var tree []Identity
	waitFor(t, "the tree to fork", func() bool {
		var err error
		tree, err = Descendants(c.id)
		if err != nil {
			t.Fatal(err)
		}
		return len(tree) == 3 && slices.IndexFunc(tree, func(id Identity) bool { return cmdline(id) == "sleep 1001" }) >= 0
	})
	r := NewResolver()
	shown := map[string]Process{}
	for _, id := range tree {
		p, err := r.Lookup(id)
		if err != nil {
			t.Fatal(err)
		}
		shown[p.Cmdline] = p
	}
	outer, inner, sleep1001 := shown["sleep 1000"], shown["sh -c sleep 1001 & wait"], shown["sleep 1001"]
	if outer.PPID != c.id.PID || inner.PPID != c.id.PID || sleep1001.PPID != inner.PID {
		t.Fatalf("the tree is %+v", shown)
	}
	if slices.Index(tree, inner.Identity) > slices.Index(tree, sleep1001.Identity) {
		t.Errorf("%v lists a child before its parent", tree)
	}

	byParent := childrenByParent()
	for _, pid := range []uint32{c.id.PID, inner.PID, sleep1001.PID} {
		a, b := childrenOf(pid), byParent(pid)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Errorf("children of %d: %v from task/*/children, %v from every stat", pid, a, b)
		}
	}

	for _, id := range append([]Identity{c.id}, tree...) {
		if out, err := Stop(t.Context(), id, time.Minute); out != Terminated || err != nil {
			t.Errorf("Stop(%+v): %v, %v", id, out, err)
		}
	}
	if _, err := Descendants(c.id); !errors.Is(err, ErrExited) {
		t.Errorf("Descendants of a stopped process: %v, want ErrExited", err)
	}
}

func cmdline(id Identity) string {
	return readCmdline("/proc/" + itoa(id.PID) + "/cmdline")
}
