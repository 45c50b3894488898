package proc

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// needRoot skips a test that needs root, except in CI, where skipping
// would hide that nothing was tested.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI must run the privileged tests as root")
		}
		t.Skip("needs root")
	}
}

// waitFor polls cond until it holds; the bound only catches a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// child is a process a test started, ended and reaped when the test ends.
type child struct {
	*exec.Cmd
	id Identity
}

// startChild runs a command and waits until it runs as comm (sh execs
// into the program at the end of a script).
func startChild(t *testing.T, comm string, name string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	pid := uint32(cmd.Process.Pid)
	waitUntilRuns(t, pid, comm)
	id, err := Identify(pid)
	if err != nil {
		t.Fatal(err)
	}
	return &child{Cmd: cmd, id: id}
}

// waitUntilRuns waits until pid has finished an exec into comm: the name
// changes first, and the command line is set a little later.
func waitUntilRuns(t *testing.T, pid uint32, comm string) {
	t.Helper()
	waitFor(t, "pid "+itoa(pid)+" to run as "+comm, func() bool {
		b, _ := os.ReadFile("/proc/" + itoa(pid) + "/comm")
		cmdline, _ := os.ReadFile("/proc/" + itoa(pid) + "/cmdline")
		return strings.TrimSpace(string(b)) == comm && len(cmdline) > 0
	})
}

func itoa(pid uint32) string { return strconv.FormatUint(uint64(pid), 10) }
