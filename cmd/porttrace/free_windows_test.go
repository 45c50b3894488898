package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	xwin "golang.org/x/sys/windows"
)

func init() {
	// listen holds a listener on 0.0.0.0, prints its port and waits to be
	// ended.
	testRoles["listen"] = func() {
		l, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			panic(err)
		}
		os.Stdout.WriteString(strconv.Itoa(l.Addr().(*net.TCPAddr).Port) + "\n")
		time.Sleep(time.Hour)
	}
}

// underWine reports whether the test runs under wine (.ci/wine-test):
// ntdll exports wine_get_version there and nowhere else.
func underWine() bool {
	return xwin.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// TestFreeFreePort: free on a port nothing holds stops nothing, says
// plainly that Windows cannot destroy TIME_WAIT connections and that a
// plain bind succeeds.
func TestFreeFreePort(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"free", strconv.Itoa(port), "--yes", "--time-wait"}, &stdout, &stderr); err != nil {
		t.Fatalf("free: %v\n%s", err, stdout.String())
	}
	for _, want := range []string{"no process holds it", "Windows has no call that destroys them", "is free: bind() succeeds now"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
}

// TestFreeHeldPort: free ends the process that listens on the port and
// says the port is free. Wine's tables name no process, so there free
// finds none to end and says the port is still not free.
func TestFreeHeldPort(t *testing.T) {
	holder := exec.Command(os.Args[0])
	holder.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=listen")
	out, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		holder.Process.Kill()
		holder.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	port := strings.TrimSpace(line)
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"free", port, "--yes", "--timeout", "2s"}, &stdout, &stderr)
	if underWine() {
		var exit exitError
		if !errors.As(err, &exit) || exit.code != 1 || !strings.Contains(exit.msg, "bind(0.0.0.0:"+port+") over TCP fails with WSAEADDRINUSE") {
			t.Errorf("free under wine: %v, want exit 1 naming the refused bind\n%s", err, stdout.String())
		}
		return
	}
	if err != nil {
		t.Fatalf("free: %v\n%s", err, stdout.String())
	}
	pid := strconv.Itoa(holder.Process.Pid)
	if !strings.Contains(stdout.String(), " "+pid+": terminated (TerminateProcess)") {
		t.Errorf("free did not say it ended pid %s:\n%s", pid, stdout.String())
	}
	if state, err := holder.Process.Wait(); err != nil || state.ExitCode() != 1 {
		t.Errorf("holder ended %v, %v; want terminated", state, err)
	}
}
