package windows

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testRoles are processes a test runs as the test binary itself, chosen by
// PORTTRACE_TEST_ROLE.
var testRoles = map[string]func(){
	// sleep waits to be ended.
	"sleep": func() { time.Sleep(time.Hour) },
	// parent starts a sleeping child, prints its pid and waits to be
	// ended.
	"parent": func() {
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=sleep")
		if err := child.Start(); err != nil {
			panic(err)
		}
		os.Stdout.WriteString(strconv.Itoa(child.Process.Pid) + "\n")
		time.Sleep(time.Hour)
	},
}

func TestMain(m *testing.M) {
	if role, ok := testRoles[os.Getenv("PORTTRACE_TEST_ROLE")]; ok {
		role()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startRole runs the test binary in a role, ends it when the test ends,
// and returns it with what it printed first (a line, if it prints).
func startRole(t *testing.T, role string, prints bool) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE="+role)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if !prints {
		return cmd, ""
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("role %s printed nothing: %v", role, err)
	}
	return cmd, strings.TrimSpace(line)
}
