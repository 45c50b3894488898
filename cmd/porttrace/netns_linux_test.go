package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests name their network namespaces with ip netns, as operators
// do; tracer/linux tests namespaces where no ip command is (make vmtest).

// netnsTest is a network namespace made with ip netns for a test.
type netnsTest struct {
	name string
	ip   string // the ip command
}

// needIPNetns makes a network namespace with ip netns, loopback up, and
// deletes it when the test ends.
func needIPNetns(t *testing.T) netnsTest {
	t.Helper()
	needRoot(t)
	path, err := exec.LookPath("ip")
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip"} {
		if err != nil {
			path, err = exec.LookPath(p)
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI must run the network namespace tests: install iproute2")
		}
		t.Skip("needs ip (iproute2)")
	}
	name := "porttrace-test-" + strconv.Itoa(os.Getpid())
	ip := func(args ...string) {
		if out, err := exec.Command(path, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { exec.Command(path, "netns", "del", name).Run() })
	ip("-n", name, "link", "set", "lo", "up")
	return netnsTest{name: name, ip: path}
}

// start runs this binary in role inside the namespace, with addr,
// and waits for its first line, "ready"; closing its stdin ends it.
func (ns netnsTest) start(t *testing.T, role, addr string) (pid int, stdin io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(ns.ip, "netns", "exec", ns.name, os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE="+role, "PORTTRACE_TEST_ADDR="+addr)
	cmd.Stderr = os.Stderr
	stdin, _ = cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("%s in %s said %q (%v)", role, ns.name, line, err)
	}
	// ip netns exec execs the program: the pid is the role's.
	return cmd.Process.Pid, stdin
}

func init() {
	// netns-hold listens on PORTTRACE_TEST_ADDR until stdin closes.
	testRoles["netns-hold"] = func() {
		l, err := net.Listen("tcp4", os.Getenv("PORTTRACE_TEST_ADDR"))
		if err != nil {
			panic(err)
		}
		os.Stdout.WriteString("ready\n")
		io.Copy(io.Discard, os.Stdin)
		l.Close()
	}
	// netns-connect makes one connection to itself on
	// PORTTRACE_TEST_ADDR, and closes it.
	testRoles["netns-connect"] = func() {
		l := listenAndConnect(os.Getenv("PORTTRACE_TEST_ADDR"))
		l.Close()
		os.Stdout.WriteString("ready\n")
	}
}

// listenAndConnect listens on addr, connects to it, accepts and closes both
// ends.
func listenAndConnect(addr string) net.Listener {
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		panic(err)
	}
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		panic(err)
	}
	s, err := l.Accept()
	if err != nil {
		panic(err)
	}
	c.Close()
	s.Close()
	return l
}

// whoExit runs porttrace who with args and returns its output and exit
// status.
func whoExit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"who"}, args...), &stdout, &stderr)
	var exit exitError
	switch {
	case err == nil:
		return stdout.String(), 0
	case errors.As(err, &exit):
		return stdout.String() + exit.msg, exit.code
	}
	t.Fatalf("who %v: %v; stderr: %s", args, err, stderr.String())
	return "", 0
}

// TestWhoAnswersPerNetworkNamespace: a listener only in another namespace
// does not hold the port here: who says so (exit status 1) and a bind
// here succeeds. Asked about that namespace, by name, path or pid, or
// about all, who names the listener, labelled with the namespace.
func TestWhoAnswersPerNetworkNamespace(t *testing.T) {
	netns := needIPNetns(t)
	ns := netns.name
	port := freeLoopbackPort(t)
	p := strconv.Itoa(port)
	pid, _ := netns.start(t, "netns-hold", "127.0.0.1:"+p)

	out, code := whoExit(t, p)
	if code != 1 || !strings.Contains(out, "no process holds it") || strings.Contains(out, strconv.Itoa(pid)) {
		t.Errorf("who %s here: exit status %d, output:\n%s\nwant 1, no process", p, code, out)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:"+p)
	if err != nil {
		t.Fatalf("a bind here fails while only %s listens: %v", ns, err)
	}
	l.Close()

	held := "held by porttrace.test " + strconv.Itoa(pid)
	for _, spec := range []string{ns, "/run/netns/" + ns, strconv.Itoa(pid)} {
		out, code := whoExit(t, "--netns", spec, p)
		if code != 0 || !strings.Contains(out, held) || !strings.Contains(out, "["+ns+"]") {
			t.Errorf("who --netns %s %s: exit status %d, output:\n%s\nwant 0, %s, labelled [%s]", spec, p, code, out, held, ns)
		}
	}

	out, code = whoExit(t, "--all-netns", "--json", p)
	var report struct {
		Held    bool `json:"held"`
		Sockets []struct {
			State     string   `json:"state"`
			NetNSName string   `json:"netns_name"`
			PIDs      []uint32 `json:"pids"`
		} `json:"sockets"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("who --all-netns --json: %v: %s", err, out)
	}
	if code != 0 || !report.Held || len(report.Sockets) != 1 || report.Sockets[0].NetNSName != ns ||
		len(report.Sockets[0].PIDs) != 1 || report.Sockets[0].PIDs[0] != uint32(pid) {
		t.Errorf("who --all-netns --json %s: exit status %d, %s\nwant 0, one socket of %d in %s", p, code, out, pid, ns)
	}

	if out, code := whoExit(t, "--netns", "no-such-netns-here", p); code != 2 || !strings.Contains(out, `network namespace "no-such-netns-here"`) {
		t.Errorf("who --netns no-such-netns-here: exit status %d, %q, want 2 naming it", code, out)
	}
}

// TestWatchLabelsOtherNamespaces: a watch prints the lines of every network
// namespace, those of others than its own labelled with theirs.
func TestWatchLabelsOtherNamespaces(t *testing.T) {
	netns := needIPNetns(t)
	ns := netns.name
	port := freeLoopbackPort(t)
	out, err := os.Create(t.TempDir() + "/lines")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	watch, stderr := startWatch(t, out, "--port", strconv.Itoa(port))

	// The same connection here on 127.0.0.1 and there on 127.0.0.2.
	listenAndConnect("127.0.0.1:" + strconv.Itoa(port))
	pid, _ := netns.start(t, "netns-connect", "127.0.0.2:"+strconv.Itoa(port))

	// The watch prints what it read each time the ring buffer runs dry:
	// wait for the last line of the connection there.
	var here, there []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(out.Name())
		if err != nil {
			t.Fatal(err)
		}
		here, there = nil, nil
		for _, line := range strings.Split(string(b), "\n") {
			// (The connection there comes from 127.0.0.1.)
			switch {
			case strings.Contains(line, "127.0.0.2:"):
				there = append(there, line)
			case strings.Contains(line, "127.0.0.1:"):
				here = append(here, line)
			}
		}
		if len(here) > 0 && len(there) > 0 && strings.Contains(there[len(there)-1], "LISTEN -> CLOSE") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lines of the connection in %s after 10s:\n%s\nstderr: %s", ns, b, stderr.String())
		}
	}
	watch.Process.Signal(os.Interrupt)
	waitExit(t, watch, stderr)
	for _, line := range here {
		if strings.Contains(line, "[") && !strings.Contains(line, "[::") {
			t.Errorf("a line of the watch's own namespace is labelled: %s", line)
		}
	}
	for _, line := range there {
		if !strings.HasSuffix(line, "  ["+ns+"]") {
			t.Errorf("a line of %s (pid %d) is not labelled [%s]: %s", ns, pid, ns, line)
		}
	}
}
