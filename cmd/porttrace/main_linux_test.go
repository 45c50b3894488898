package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer/api"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI must run the privileged tests as root")
		}
		t.Skip("needs root")
	}
}

// TestWithoutPrivileges runs porttrace as nobody: one line naming what is
// missing, exit status 1.
func TestWithoutPrivileges(t *testing.T) {
	needRoot(t)
	// The test binary sits in a folder only root may enter: copy it out.
	dir, err := os.MkdirTemp("", "porttrace-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "porttrace")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORTTRACE_ARGS=--port 8080"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("got %v, want exit status 1; stderr: %s", err, stderr.String())
	}
	want := "porttrace: needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8): run with sudo\n"
	if stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}

// TestJSONLines watches a real loopback connection with --json and checks
// every field of every line against what this process did.
func TestJSONLines(t *testing.T) {
	needRoot(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--port", strconv.Itoa(port), "--json", "--ready-file", ready}, &stdout, &stderr)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("porttrace stopped before it was ready: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no ready file after 10s")
		}
	}

	l, err = net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	clientPort := c.LocalAddr().(*net.TCPAddr).Port
	c.Close()
	s.Close()
	l.Close()
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("porttrace: %v\n%s", err, stderr.String())
	}

	type line struct {
		Time       string  `json:"time"`
		Type       string  `json:"type"`
		Proto      string  `json:"proto"`
		Family     string  `json:"family"`
		SAddr      string  `json:"saddr"`
		SPort      int     `json:"sport"`
		DAddr      *string `json:"daddr"`
		DPort      *int    `json:"dport"`
		Old        *string `json:"old"`
		New        *string `json:"new"`
		PID        int     `json:"pid"`
		Comm       string  `json:"comm"`
		Thread     string  `json:"thread"`
		StartNs    uint64  `json:"start_ns"`
		CgroupID   uint64  `json:"cgroup_id"`
		OwnerVia   string  `json:"owner_via"`
		NetNS      uint64  `json:"netns"`
		DurationNs *int64  `json:"duration_ns"`
		TimeoutNs  int64   `json:"timeout_ns"`
		Reason     string  `json:"reason"`
	}
	var got []string
	for _, raw := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var ln line
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ln); err != nil {
			t.Fatalf("line %q: %v", raw, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, ln.Time); err != nil {
			t.Errorf("time %q: %v", ln.Time, err)
		}
		if ln.Proto != "tcp" && ln.Proto != "mptcp" || ln.Family != "ipv4" || ln.SAddr != "127.0.0.1" || ln.PID != os.Getpid() || ln.NetNS == 0 {
			t.Errorf("line %q: want proto tcp, family ipv4, saddr 127.0.0.1, pid %d, a netns", raw, os.Getpid())
		}
		if !strings.HasPrefix("porttrace.test", ln.Comm) || ln.Comm == "" || ln.Thread == "" {
			t.Errorf("line %q: comm %q thread %q, want this test's", raw, ln.Comm, ln.Thread)
		}
		// Every process is in a cgroup (the root one's id is 1).
		if ln.StartNs == 0 || ln.CgroupID == 0 {
			t.Errorf("line %q: no start time or cgroup of its owner", raw)
		}
		desc := ln.Type
		if ln.Old != nil {
			desc += " " + *ln.Old + "->" + *ln.New + " " + strconv.Itoa(ln.SPort) + ">" + strconv.Itoa(*ln.DPort) + " " + ln.OwnerVia
		}
		got = append(got, desc)
	}
	p, cp := strconv.Itoa(port), strconv.Itoa(clientPort)
	want := []string{
		"bind",
		"listen CLOSE->LISTEN " + p + ">0 listen",
		"state CLOSE->SYN_SENT " + cp + ">" + p + " connect",
		"state SYN_SENT->ESTABLISHED " + cp + ">" + p + " connect",
		"state LISTEN->SYN_RECV " + p + ">" + cp + " accept",
		"state SYN_RECV->ESTABLISHED " + p + ">" + cp + " accept",
	}
	for i, w := range want {
		if i >= len(got) || got[i] != w {
			t.Fatalf("lines:\n%s\nwant them to start with:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if !strings.Contains(stderr.String(), "events lost in the kernel: 0") {
		t.Errorf("summary does not report the lost count: %s", stderr.String())
	}
}

// freeLoopbackPort returns a port nothing on 127.0.0.1 uses right now.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startWatch runs porttrace with args as its own process, its stdout going
// to stdout, and waits until its probes are attached.
func startWatch(t *testing.T, stdout *os.File, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_ARGS="+strings.Join(append(args, "--ready-file", ready), " "))
	cmd.Stdout = stdout
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			return cmd, &stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file after 10s; stderr: %s", stderr.String())
		}
	}
}

// TestStalledStdout: a watch whose reader stopped reading keeps answering
// the API, and SIGINT still ends it, with a summary that counts the lines
// it could not write.
func TestStalledStdout(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	// A pipe nobody reads: once its 64 KiB are full, every write blocks.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	watch, stderr := startWatch(t, w, "--port", strconv.Itoa(port))
	w.Close()

	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// 2,000 connections make about a megabyte of lines: far past the pipe.
	for range 2000 {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	answer, err := api.Ask(ctx, api.WatchSocket(watch.Process.Pid), uint16(port))
	if err != nil {
		t.Fatalf("the stalled watch does not answer: %v", err)
	}
	if len(answer.Sockets) == 0 {
		t.Error("the stalled watch knows no owner on the port, not even the listener's")
	}

	watch.Process.Signal(os.Interrupt)
	exited := make(chan error, 1)
	go func() { exited <- watch.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("watch exited with %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("SIGINT did not end a watch whose stdout is stalled; stderr: %s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "porttrace: lines not written: ") {
		t.Errorf("the summary does not count the lines not written: %s", stderr.String())
	}
	if _, err := os.Stat(api.WatchSocket(watch.Process.Pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the watch left its socket behind: %v", err)
	}
}

// TestAskedWhileStopping: clients keep asking a watch's API while events
// flow and while it stops; under the race detector (make test) this shows
// that readers never share the correlator with the event loop, not even
// for the final flush.
func TestAskedWhileStopping(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--port", strconv.Itoa(port), "--ready-file", ready}, &stdout, &stderr)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file after 10s; stderr: %s", stderr.String())
		}
	}
	askers := make(chan int, 4)
	stop := make(chan struct{})
	for range cap(askers) {
		go func() {
			answered := 0
			defer func() { askers <- answered }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				actx, acancel := context.WithTimeout(context.Background(), time.Second)
				if _, err := api.Ask(actx, api.WatchSocket(os.Getpid()), uint16(port)); err == nil {
					answered++
				}
				acancel()
			}
		}()
	}
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		c.Close()
	}
	l.Close()
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("porttrace: %v\n%s", err, stderr.String())
	}
	close(stop)
	total := 0
	for range cap(askers) {
		total += <-askers
	}
	if total == 0 {
		t.Error("the watch answered no question while it ran")
	}
}

// TestFamilyFlagStartingSnapshot: -4 and -6 apply to the sockets a watch
// starts from as to the events: by the traffic they carry, a dual-stack
// [::] listener under both.
func TestFamilyFlagStartingSnapshot(t *testing.T) {
	needRoot(t)
	listen := func(network, addr string) {
		t.Helper()
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
	split, dual := strconv.Itoa(freeLoopbackPort(t)), strconv.Itoa(freeLoopbackPort(t))
	listen("tcp4", "127.0.0.1:"+split)
	listen("tcp6", "[::1]:"+split)
	listen("tcp", "[::]:"+dual)
	for _, tc := range []struct {
		flag, port string
		want       []string
	}{
		{"-4", split, []string{"127.0.0.1"}},
		{"-6", split, []string{"::1"}},
		{"-4", dual, []string{"::"}},
		{"-6", dual, []string{"::"}},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{tc.flag, "--port", tc.port, "--json", "--duration", "200ms"}, &stdout, &stderr); err != nil {
			t.Fatalf("porttrace %s: %v\n%s", tc.flag, err, stderr.String())
		}
		var got []string
		for _, raw := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			var ln struct {
				Type  string `json:"type"`
				SAddr string `json:"saddr"`
			}
			if err := json.Unmarshal([]byte(raw), &ln); err != nil {
				t.Fatalf("line %q: %v", raw, err)
			}
			if ln.Type == "socket" {
				got = append(got, ln.SAddr)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("porttrace %s --port %s starts from %v, want %v", tc.flag, tc.port, got, tc.want)
		}
	}
}
