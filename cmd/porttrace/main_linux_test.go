package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/linux"
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

// copyForNobody copies the test binary where nobody may run it: it sits
// in a folder only root may enter.
func copyForNobody(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "porttrace-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "porttrace")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestWithoutPrivileges runs porttrace as nobody: one line naming what is
// missing, exit status 1.
func TestWithoutPrivileges(t *testing.T) {
	needRoot(t)
	cmd := exec.Command(copyForNobody(t))
	cmd.Env = []string{"PORTTRACE_ARGS=--port 8080"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("got %v, want exit status 1; stderr: %s", err, stderr.String())
	}
	want := "porttrace: needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8): run as root, e.g. with sudo\n"
	if stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}

// TestMissingPermissionsNamed runs a watch as nobody with only CAP_BPF and
// CAP_PERFMON: it runs, and says without -v, one line for each hook it could
// not attach, which permission is missing and what it will not show.
func TestMissingPermissionsNamed(t *testing.T) {
	needRoot(t)
	tracefs, _, err := linux.EnsureTracefs()
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(tracefs); err != nil || st.Mode().Perm()&0o001 != 0 {
		t.Fatalf("tracefs at %s lets others in (%v, %v): this test needs the kernel's default mode, 0700", tracefs, st.Mode(), err)
	}
	tracefsNeeded := "needs read access to tracefs (root, or CAP_DAC_READ_SEARCH)"
	want := []string{
		"porttrace: accept hook not attached: reading " + tracefs + "/events/syscalls/sys_exit_accept/id " + tracefsNeeded + ": passive sockets are charged to the listener's owner",
		"porttrace: bind hook not attached: reading " + tracefs + "/events/syscalls/sys_exit_bind/id " + tracefsNeeded + ": bind(2) calls and their errors are not shown",
	}
	// /proc/kallsyms hides addresses from those without CAP_SYSLOG unless
	// kptr_restrict is 0 and perf_event_paranoid at most 1.
	if sysctl(t, "kptr_restrict") > 0 || sysctl(t, "perf_event_paranoid") > 1 {
		want = append(want, "porttrace: timewait hook not attached: reading kernel addresses in /proc/kallsyms needs CAP_SYSLOG (kptr_restrict, perf_event_paranoid): TIME_WAIT is shown as the kernel's state tracepoint reports it (-> CLOSE)")
	}
	cmd := exec.Command(copyForNobody(t))
	cmd.Env = []string{"PORTTRACE_ARGS=--port " + strconv.Itoa(freeLoopbackPort(t)) + " --duration 1s"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{unix.CAP_BPF, unix.CAP_PERFMON},
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("porttrace with CAP_BPF and CAP_PERFMON: %v; stderr: %s", err, stderr.String())
	}
	lines := strings.Split(stderr.String(), "\n")
	if len(lines) < len(want) || !slices.Equal(lines[:len(want)], want) {
		t.Errorf("stderr:\n%s\nwant it to start with:\n%s", stderr.String(), strings.Join(want, "\n"))
	}
}

// sysctl reads a number from /proc/sys/kernel.
func sysctl(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/" + name)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
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

	l, c, s := loopbackPair(t, port)
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
		Cgroup     string  `json:"cgroup"`
		Unit       string  `json:"unit"`
		Container  any     `json:"container"`
		OwnerVia   string  `json:"owner_via"`
		NetNS      uint64  `json:"netns"`
		DurationNs *int64  `json:"duration_ns"`
		TimeoutNs  int64   `json:"timeout_ns"`
		Reason     string  `json:"reason"`
	}
	// The last line is the summary, of the lines before it.
	raws := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var summary struct {
		Type        string
		Lines       int
		LostDropped *uint64 `json:"lost_dropped"`
	}
	if err := json.Unmarshal([]byte(raws[len(raws)-1]), &summary); err != nil || summary.Type != "summary" || summary.Lines != len(raws)-1 || summary.LostDropped == nil {
		t.Errorf("last line %q (%v): want a summary of the %d lines before it", raws[len(raws)-1], err, len(raws)-1)
	}
	// This process's cgroup v2 path, /proc/self/cgroup's "0::" line,
	// which lines name where a cgroup2 file system is mounted (not on the
	// vmtest guests).
	procCgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	_, cgroup, _ := strings.Cut(string(procCgroup), "0::")
	cgroup, _, _ = strings.Cut(cgroup, "\n")
	if mountinfo, err := os.ReadFile("/proc/self/mountinfo"); err != nil || !strings.Contains(string(mountinfo), " - cgroup2 ") {
		cgroup = ""
	}
	var got []string
	for _, raw := range raws[:len(raws)-1] {
		var ln line
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ln); err != nil {
			t.Fatalf("line %q: %v", raw, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, ln.Time); err != nil {
			t.Errorf("time %q: %v", ln.Time, err)
		}
		if ln.Type == "socket" {
			// The starting snapshot: this test's sockets come after it,
			// and another test's TIME_WAIT may still be on a port the
			// kernel handed out again (seen in the VM matrix).
			continue
		}
		if ln.Proto != "tcp" && ln.Proto != "mptcp" || ln.Family != "ipv4" || ln.SAddr != "127.0.0.1" || ln.PID != os.Getpid() || ln.NetNS == 0 {
			t.Errorf("line %q: want proto tcp, family ipv4, saddr 127.0.0.1, pid %d, a netns", raw, os.Getpid())
		}
		if !strings.HasPrefix("porttrace.test", ln.Comm) || ln.Comm == "" || ln.Thread == "" {
			t.Errorf("line %q: comm %q thread %q, want this test's", raw, ln.Comm, ln.Thread)
		}
		// Every process is in a cgroup (the root one's id is 1).
		if ln.StartNs == 0 || ln.CgroupID == 0 || ln.Cgroup != cgroup {
			t.Errorf("line %q: no start time or cgroup of its owner, want cgroup %q", raw, cgroup)
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

// lockedBuffer is a watch's stderr, which the test may read while the
// watch writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startWatch runs porttrace with args as its own process, its stdout going
// to stdout, and waits until its probes are attached.
func startWatch(t *testing.T, stdout *os.File, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	cmd, stderr := launchWatch(t, stdout, append(args, "--ready-file", ready)...)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			return cmd, stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file after 10s; stderr: %s", stderr.String())
		}
	}
}

// launchWatch runs porttrace with args, without waiting for it to be
// ready: for a watch that ends before it is.
func launchWatch(t *testing.T, stdout *os.File, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_ARGS="+strings.Join(args, " "))
	cmd.Stdout = stdout
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, stderr
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

	l := closingListener(t, port)
	defer l.Close()
	// 2,000 connections make about a megabyte of lines: far past the pipe.
	for range 2000 {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	// The watch publishes what it knows when it has read every event
	// (under the race detector, a while after the storm): ask until it
	// names the listener's owner, for at most 10s.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		answer, err := api.Ask(ctx, api.WatchSocket(watch.Process.Pid), uint16(port), false)
		cancel()
		if err != nil {
			t.Fatalf("the stalled watch does not answer: %v", err)
		}
		if len(answer.Sockets) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled watch knows no owner on the port after 10s, not even the listener's; stderr: %s", stderr.String())
		}
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
				if _, err := api.Ask(actx, api.WatchSocket(os.Getpid()), uint16(port), false); err == nil {
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
		serverClosesFirst(t, l)
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

// closingListener listens on 127.0.0.1:port and closes every connection it
// accepts, until it is closed.
func closingListener(t *testing.T, port int) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// connectLoop makes loopback connections to port until the returned
// function is called: traffic for a watch to print.
func connectLoop(t *testing.T, port int) (stop func()) {
	t.Helper()
	l := closingListener(t, port)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if c, err := net.Dial("tcp4", l.Addr().String()); err == nil {
				c.Close()
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		l.Close()
	}
}

// waitExit waits for the watch to end, at most 10s (a hang detector), and
// returns its exit status.
func waitExit(t *testing.T, watch *exec.Cmd, stderr *lockedBuffer) int {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- watch.Wait() }()
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if !exit.Exited() {
				t.Fatalf("watch ended by %v; stderr: %s", exit, stderr.String())
			}
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(10 * time.Second):
		t.Fatalf("the watch did not stop within 10s; stderr: %s", stderr.String())
	}
	return -1
}

// checkSocketRemoved: the watch removed its API socket on the way out.
func checkSocketRemoved(t *testing.T, pid int) {
	t.Helper()
	if _, err := os.Stat(api.WatchSocket(pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the watch left its socket behind: %v", err)
	}
}

// stderrLines are the lines a watch wrote to stderr after the one saying
// what it watches.
func stderrLines(t *testing.T, stderr *lockedBuffer) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if !strings.HasPrefix(lines[0], "porttrace: watching port ") {
		t.Fatalf("the first line on stderr does not say what is watched: %q", lines[0])
	}
	return lines[1:]
}

// TestReaderGone: porttrace | head -1 prints the column header and stops
// quietly, exit status 0, as soon as it next writes, removing its socket.
func TestReaderGone(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	head := exec.Command("head", "-1")
	head.Stdin = r
	var headOut bytes.Buffer
	head.Stdout = &headOut
	if err := head.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	watch, stderr := startWatch(t, w, "--port", strconv.Itoa(port))
	w.Close()
	if err := head.Wait(); err != nil {
		t.Fatal(err)
	}
	stop := connectLoop(t, port)
	defer stop()
	if code := waitExit(t, watch, stderr); code != 0 {
		t.Errorf("exit status %d, want 0; stderr: %s", code, stderr.String())
	}
	if !strings.HasPrefix(headOut.String(), "TIME ") {
		t.Errorf("head read %q, want the column header", headOut.String())
	}
	if lines := stderrLines(t, stderr); len(lines) > 0 {
		t.Errorf("a watch whose reader has gone said more: %q", lines)
	}
	checkSocketRemoved(t, watch.Process.Pid)
}

// TestOutputFails: with stdout on /dev/full the watch stops at once, with
// one line naming the error and exit status 1. Its header fails, maybe
// before it is ready: then it leaves no ready file, whole or half written.
func TestOutputFails(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	ready := filepath.Join(t.TempDir(), "ready")
	watch, stderr := launchWatch(t, full, "--port", strconv.Itoa(port), "--ready-file", ready)
	stop := connectLoop(t, port)
	defer stop()
	if code := waitExit(t, watch, stderr); code != 1 {
		t.Errorf("exit status %d, want 1; stderr: %s", code, stderr.String())
	}
	want := "porttrace: writing output: write /dev/stdout: no space left on device"
	if lines := stderrLines(t, stderr); len(lines) != 1 || lines[0] != want {
		t.Errorf("stderr after the first line: %q, want only %q", lines, want)
	}
	if entries, _ := os.ReadDir(filepath.Dir(ready)); len(entries) > 1 || len(entries) == 1 && entries[0].Name() != "ready" {
		t.Errorf("the watch left %v, want its ready file or nothing", entries)
	}
	checkSocketRemoved(t, watch.Process.Pid)
}

// watchToFile starts a watch of a free port, its output going to a file.
func watchToFile(t *testing.T) (watch *exec.Cmd, stderr *lockedBuffer, port int) {
	t.Helper()
	port = freeLoopbackPort(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the watch has its own
	watch, stderr = startWatch(t, out, "--port", strconv.Itoa(port))
	return watch, stderr, port
}

// TestStopSignals: SIGHUP, SIGQUIT and SIGPIPE end a watch as SIGINT does:
// its summary, its socket removed, exit status 0.
func TestStopSignals(t *testing.T) {
	needRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGPIPE} {
		t.Run(sig.String(), func(t *testing.T) {
			watch, stderr, _ := watchToFile(t)
			if err := watch.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := waitExit(t, watch, stderr); code != 0 {
				t.Errorf("exit status %d, want 0; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), "porttrace: events lost in the kernel: ") {
				t.Errorf("no summary: %s", stderr.String())
			}
			checkSocketRemoved(t, watch.Process.Pid)
		})
	}
}

// TestAPIClientHangsUp: a client that hangs up before its answer does not
// stop the watch (the answer's write must raise no SIGPIPE, which the
// watch takes as a stop request).
func TestAPIClientHangsUp(t *testing.T) {
	needRoot(t)
	watch, stderr, port := watchToFile(t)
	path := api.WatchSocket(watch.Process.Pid)
	request := "GET /v1/owners?port=" + strconv.Itoa(port) + " HTTP/1.1\r\nHost: porttrace\r\n\r\n"
	for range 200 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the watch stopped serving: %v; stderr: %s", err, stderr.String())
		}
		// Ask, then hang up without reading: the reset makes the answer's
		// write fail.
		c.(*net.UnixConn).Write([]byte(request))
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := api.Ask(ctx, path, uint16(port), false); err != nil {
		t.Fatalf("the watch no longer answers: %v; stderr: %s", err, stderr.String())
	}
	watch.Process.Signal(os.Interrupt)
	if code := waitExit(t, watch, stderr); code != 0 {
		t.Errorf("exit status %d; stderr: %s", code, stderr.String())
	}
}

// TestPIDMustBeAProcess: --pid names a process; a thread's id is refused,
// naming its process.
func TestPIDMustBeAProcess(t *testing.T) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, task := range tasks {
		if task.Name() == self {
			continue
		}
		err := run(context.Background(), []string{"--pid", task.Name()}, io.Discard, io.Discard)
		want := "invalid --pid " + task.Name() + ": a thread of process " + self + ": give the process"
		var exit exitError
		if !errors.As(err, &exit) || exit.code != 2 || err.Error() != want {
			t.Errorf("got %v, want exit status 2 and %q", err, want)
		}
		return
	}
	t.Fatal("the test process has no thread but its main one")
}

// TestDurationCountsTracingTime: --duration is the time traced, counted
// once the probes are attached and the sockets found; the start (a fifth of
// a second here, seconds on a loaded machine) used to eat into it.
func TestDurationCountsTracingTime(t *testing.T) {
	needRoot(t)
	const duration = 300 * time.Millisecond
	var stdout, stderr bytes.Buffer
	port := strconv.Itoa(freeLoopbackPort(t))
	if err := run(context.Background(), []string{"--port", port, "--json", "--duration", duration.String()}, &stdout, &stderr); err != nil {
		t.Fatalf("porttrace: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var summary struct {
		Type      string `json:"type"`
		ElapsedNs int64  `json:"elapsed_ns"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &summary); err != nil || summary.Type != "summary" {
		t.Fatalf("last line %q, want the summary (%v)", lines[len(lines)-1], err)
	}
	if summary.ElapsedNs < int64(duration) {
		t.Errorf("traced for %v, want the %v asked for", time.Duration(summary.ElapsedNs), duration)
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

// TestWhoWithoutPrivileges: as nobody, who still answers from what the
// kernel gives any user: root's listener as held by a process of uid 0 (exit
// 0: the port is taken), and a note saying what naming it needs.
func TestWhoWithoutPrivileges(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(copyForNobody(t))
	cmd.Env = []string{"PORTTRACE_ARGS=who " + strconv.Itoa(port) + " --socket /nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("who as nobody: %v; stderr: %s", err, stderr.String())
	}
	for _, want := range []string{
		"held by a process of uid 0 (naming it needs root)",
		"tcp   LISTEN       127.0.0.1:" + strconv.Itoa(port),
		"note: without root, only your own processes are named",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("who as nobody lacks %q:\n%s", want, stdout.String())
		}
	}
}

// serverClosesFirst makes one connection to l that the server closes
// first: its end, on l's port, goes TIME_WAIT.
func serverClosesFirst(t *testing.T, l net.Listener) {
	t.Helper()
	c, s := connectTo(t, l)
	s.Close()
	c.Close()
}

// TestTopPlainInAPipe: top with its output in a file prints -n tables,
// plain (no escape sequences), each after a line with the time, with a
// row for the port and this process, which listens and connects there.
func TestTopPlainInAPipe(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "top.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	top, stderr := startWatch(t, out, "top", "--port", strconv.Itoa(port), "-n", "2", "--interval", "500ms")
	stop := connectLoop(t, port)
	defer stop()
	if code := waitExit(t, top, stderr); code != 0 {
		t.Fatalf("exit status %d; stderr: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if strings.Contains(text, "\x1b") || strings.Count(text, "porttrace top ") != 2 || strings.Count(text, "PORT  ") != 2 {
		t.Fatalf("want two plain tables, each after a title line; got:\n%s", text)
	}
	row := false
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		row = row || (len(f) > 3 && f[0] == strconv.Itoa(port) && f[1] == strconv.Itoa(os.Getpid()))
	}
	if !row {
		t.Errorf("no row for port %d and this process (%d):\n%s", port, os.Getpid(), text)
	}
}

// TestTopOnATerminalStartsFromTheSockets: top on a terminal draws its
// first table at once, and that table already has the sockets older than
// top (it once drew an empty one before the loop had them, and -n 1 ended
// there), with rates over the time since top started (a connection every
// 20 ms once read 3,663,003.7 a second: counts over the microseconds since
// the snapshot); -n counts tables, not redraws.
func TestTopOnATerminalStartsFromTheSockets(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	stop := connectLoop(t, port)
	defer stop()
	master, terminal := openPty(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TERM=xterm", "PORTTRACE_ARGS="+strings.Join([]string{"top", "--port", strconv.Itoa(port), "-n", "1", "--interval", "1m"}, " "))
	cmd.Stdin, cmd.Stdout = terminal, terminal
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	terminal.Close()
	var screen bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		io.Copy(&screen, master) // until the last process holding the terminal ends (EIO)
	}()
	if code := waitExit(t, cmd, stderr); code != 0 {
		t.Fatalf("exit status %d; stderr: %s", code, stderr.String())
	}
	<-read
	if n := strings.Count(screen.String(), "porttrace top "); n != 1 {
		t.Errorf("%d tables drawn, want 1:\n%q", n, screen.String())
	}
	row := false
	for _, line := range strings.Split(screen.String(), "\r\n") {
		// PORT PID COMMAND SOCKETS LISTEN ESTAB CLOSE_WAIT TIME_WAIT OTHER OPENED/s
		f := strings.Fields(line)
		if len(f) > 9 && f[0] == strconv.Itoa(port) && f[1] == strconv.Itoa(os.Getpid()) && f[4] == "1" {
			row = true
			if opened, err := strconv.ParseFloat(f[9], 64); err != nil || opened > 1000 {
				t.Errorf("connections opened a second: %s, want at most 100 (one every 20 ms, both ends):\n%s", f[9], line)
			}
		}
	}
	if !row {
		t.Errorf("no row for port %d and its listener's process (%d) in the first table:\n%q", port, os.Getpid(), screen.String())
	}
}

// openPty opens a pseudo-terminal of 40 rows and 200 columns: its master
// side, and the terminal a program is given.
func openPty(t *testing.T) (master, terminal *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	terminal, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(terminal.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 200}); err != nil {
		t.Fatal(err)
	}
	return master, terminal
}

// TestTopEveryPortShowsSocketsOlderThanIt: top without --port starts, as
// with one, from the sockets that exist: a listener no event has mentioned
// yet has its row, a plain TCP one and an MPTCP one (Go's by default: its
// events come from its TCP subflow); and what the listener's process
// accepts after top started counts on that same row (the snapshot's
// holder and the events' owner are one process). A connection the process
// made to its plain listener before top counts on that row too, both ends:
// its client end under the port it connected to, not its ephemeral one
// (top once gave each such client end a row of its own).
func TestTopEveryPortShowsSocketsOlderThanIt(t *testing.T) {
	needRoot(t)
	needMPTCP(t)
	h := startHolder(t, "")
	var ports []string
	for _, listen := range []string{"listen", "listen-mptcp"} {
		_, port, _ := net.SplitHostPort(h.do("%s 127.0.0.1:0", listen))
		ports = append(ports, port)
	}
	h.do("dial 127.0.0.1:%s", ports[0])
	out, err := os.Create(filepath.Join(t.TempDir(), "top.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	top, stderr := startWatch(t, out, "top", "-n", "1", "--interval", "1500ms")
	for _, port := range ports {
		c, err := net.Dial("tcp4", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	if code := waitExit(t, top, stderr); code != 0 {
		t.Fatalf("exit status %d; stderr: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[1] == strconv.Itoa(h.pid) {
			rows[f[0]] = append(rows[f[0]], line)
		}
	}
	if len(rows) != len(ports) {
		t.Errorf("the listeners' process %d has rows under %d ports, want %d (%v):\n%s", h.pid, len(rows), len(ports), ports, b)
	}
	for i, port := range ports {
		// PORT PID COMMAND SOCKETS LISTEN ESTAB: the plain listener's
		// process has both ends of its own connection and the one
		// accepted from this test.
		estab := map[int]string{0: "3", 1: "1"}[i]
		if r := rows[port]; len(r) != 1 || strings.Fields(r[0])[4] != "1" || strings.Fields(r[0])[5] != estab {
			t.Errorf("rows of port %s and its listener's process %d: %q, want one, with 1 in LISTEN and %s in ESTAB:\n%s", port, h.pid, r, estab, b)
		}
	}
}

// needMPTCP fails (under CI) or skips a test that needs Go's listeners to
// be Multipath TCP, as they are by default where the kernel lets them.
func needMPTCP(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile("/proc/sys/net/mptcp/enabled"); err != nil || strings.TrimSpace(string(b)) != "1" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this kernel does not let sockets use MPTCP (/proc/sys/net/mptcp/enabled: %q, %v)", b, err)
		}
		t.Skip("needs MPTCP enabled (net.mptcp.enabled=1)")
	}
}

// writeCounter counts the writes made to it.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestAnswerWrittenOnce: who prints its answer in one write, not one a
// line: with --all on a busy port that was tens of thousands of system
// calls.
func TestAnswerWrittenOnce(t *testing.T) {
	needRoot(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	for range 20 {
		c, s := connectTo(t, l)
		defer c.Close()
		defer s.Close()
	}
	var stdout writeCounter
	var stderr bytes.Buffer
	// run sets the collector as who does in its own process: this one's
	// goes back as it was.
	t.Cleanup(func() { debug.SetGCPercent(100); debug.SetMemoryLimit(math.MaxInt64) })
	if err := run(t.Context(), []string{"who", "--all", "--socket", "/nonexistent", strconv.Itoa(port)}, &stdout, &stderr); err != nil {
		t.Fatalf("who: %v: %s", err, stderr.String())
	}
	if lines := strings.Count(stdout.String(), "\n"); stdout.writes != 1 || lines < 21 {
		t.Errorf("%d lines in %d writes, want a line for each of 21 sockets, in one write:\n%s", lines, stdout.writes, stdout.String())
	}
}
