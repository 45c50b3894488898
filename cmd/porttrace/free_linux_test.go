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

	"golang.org/x/sys/unix"
)

// holdAndHandDown is a test role: listen on PORTTRACE_TEST_ADDR, start a
// child that inherits the listener (as a forking server's worker does),
// print both pids and wait for stdin to close.
func holdAndHandDown() {
	l, err := net.Listen("tcp4", os.Getenv("PORTTRACE_TEST_ADDR"))
	if err != nil {
		panic(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		panic(err)
	}
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=inherit")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		panic(err)
	}
	os.Stdout.WriteString(strconv.Itoa(os.Getpid()) + " " + strconv.Itoa(child.Process.Pid) + "\n")
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// startHandDown runs the holdAndHandDown role and returns the two pids.
func startHandDown(t *testing.T, addr string) (parent, child int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=hand-down", "PORTTRACE_TEST_ADDR="+addr)
	stdin, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if child > 0 {
			unix.Kill(child, unix.SIGKILL)
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(line)
	parent, _ = strconv.Atoi(fields[0])
	child, _ = strconv.Atoi(fields[1])
	return parent, child
}

// alive says whether pid runs: a zombie, dead but not yet reaped by a
// parent that was stopped too, does not.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// TestFreeParentAndChild: free stops the topmost holder; the child that
// inherited the listener keeps the port until --tree stops it too, and
// free says whether the port is free by its exit status.
func TestFreeParentAndChild(t *testing.T) {
	needRoot(t)
	for _, tree := range []bool{false, true} {
		port := freeLoopbackPort(t)
		parent, child := startHandDown(t, "127.0.0.1:"+strconv.Itoa(port))
		args := []string{"free", strconv.Itoa(port), "--yes", "--timeout", "2s"}
		if tree {
			args = append(args, "--tree")
		}
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		var exit exitError
		switch {
		case tree && err != nil:
			t.Fatalf("free --tree: %v\n%s", err, stdout.String())
		case !tree && (!errors.As(err, &exit) || exit.code != 1):
			t.Fatalf("free without --tree: got %v, want exit 1 (the child still holds the port)\n%s", err, stdout.String())
		}
		if !strings.Contains(stdout.String(), "and the holders it started: ") {
			t.Errorf("the plan does not name the child:\n%s", stdout.String())
		}
		time.Sleep(100 * time.Millisecond) // the zombie's reaping is its parent's business
		if alive(child) != !tree {
			t.Errorf("tree=%v: child alive %v", tree, alive(child))
		}
		if tree {
			l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatalf("free said the port is free, but: %v", err)
			}
			l.Close()
		}
		_ = parent
	}
}

// TestFreeTimeWait: a port no process holds but TIME_WAIT blocks is freed
// by --time-wait on kernels that can destroy them.
func TestFreeTimeWait(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	serverClosesFirst(t, l)
	l.Close()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"free", strconv.Itoa(port), "--time-wait", "--yes"}, &stdout, &stderr); err != nil {
		t.Fatalf("free --time-wait: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(stdout.String(), "TIME_WAIT sockets: 1 destroyed") {
		t.Errorf("free --time-wait did not say it destroyed the TIME_WAIT socket:\n%s", stdout.String())
	}
	fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Errorf("bind without SO_REUSEADDR after free --time-wait: %v", err)
	}
}

// TestFreeDryRun: --dry-run stops nothing and exits as free would end: 1
// while a process holds the port; 0 with only a server's TIME_WAIT left
// (a server's bind, with SO_REUSEADDR, succeeds: free itself then exits
// 0), naming it; 0 when free.
func TestFreeDryRun(t *testing.T) {
	needRoot(t)
	dryRun := func(port int) (string, int) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"free", strconv.Itoa(port), "--dry-run"}, &stdout, &stderr)
		var exit exitError
		switch {
		case err == nil:
			return stdout.String(), 0
		case errors.As(err, &exit):
			return stdout.String(), exit.code
		}
		t.Fatalf("free --dry-run: %v", err)
		return "", 0
	}
	port := freeLoopbackPort(t)
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	if out, code := dryRun(port); code != 1 || !strings.Contains(out, "held by 1 process;") || !strings.Contains(out, " "+strconv.Itoa(os.Getpid())) {
		t.Errorf("held port: exit %d, want 1 naming this process (%d):\n%s", code, os.Getpid(), out)
	}
	serverClosesFirst(t, l)
	l.Close()
	if out, code := dryRun(port); code != 0 || !strings.Contains(out, "and 1 socket(s) no process holds (TIME_WAIT") {
		t.Errorf("port in TIME_WAIT: exit %d, want 0 naming the TIME_WAIT socket:\n%s", code, out)
	}
	if out, code := dryRun(freeLoopbackPort(t)); code != 0 || !strings.Contains(out, "no process holds it") {
		t.Errorf("free port: exit %d, want 0:\n%s", code, out)
	}
}

// TestFreeAsksFirst: without a terminal and without --yes, free stops
// nothing and says how to go on.
func TestFreeAsksFirst(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"free", strconv.Itoa(port)}, &stdout, &stderr)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != 2 || !strings.Contains(exit.msg, "--yes") {
		t.Fatalf("got %v, want a usage error naming --yes", err)
	}
	if !alive(os.Getpid()) {
		t.Fatal("unreachable")
	}
}

func init() {
	testRoles["hand-down"] = holdAndHandDown
	// inherit holds the listener it was handed (fd 3) until killed.
	testRoles["inherit"] = func() { select {} }
}
