package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func init() {
	// connect makes one connection to PORTTRACE_TEST_ADDR and closes it;
	// in PORTTRACE_TEST_CGROUP first, when set.
	testRoles["connect"] = func() {
		if dir := os.Getenv("PORTTRACE_TEST_CGROUP"); dir != "" {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		c, err := net.Dial("tcp4", os.Getenv("PORTTRACE_TEST_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		c.Close()
	}
	// spawn waits for a line on its stdin, then runs the connect role as
	// its child, and says the child's pid on its stdout.
	testRoles["spawn"] = func() {
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			os.Exit(1)
		}
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=connect")
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			os.Exit(1)
		}
		fmt.Println(child.Process.Pid)
		if err := child.Wait(); err != nil {
			os.Exit(1)
		}
	}
}

// platformBadInputs are the bad inputs of Linux's own flags.
var platformBadInputs = []badInput{
	{[]string{"--container", "no-such-container-here"}, 2, `invalid --container "no-such-container-here": neither docker nor podman knows a container of that name`},
	{[]string{"--container", "abcdef"}, 2, `invalid --container "abcdef"`},
}

// TestWatchingContainer: the first line names the container by its id's
// first 12 digits, as docker ps does.
func TestWatchingContainer(t *testing.T) {
	var f watchFlags
	fs := newFlagSet("porttrace")
	f.define(fs)
	if err := fs.Parse([]string{"--container", strings.Repeat("0123456789ab", 2)}); err != nil {
		t.Fatal(err)
	}
	if err := f.checkWatch(); err != nil {
		t.Fatal(err)
	}
	if got, want := f.watching(), "every port, IPv4 and IPv6, sockets in container 0123456789ab"; got != want {
		t.Errorf("watching %q, want %q", got, want)
	}
}

// jsonLine is one line of a watch's JSON: the fields these tests read of
// records, connections and the summary.
type jsonLine struct {
	Type        string
	Time        time.Time
	Late        bool
	SPort       int
	DPort       int
	Old, New    string
	PID         int
	Comm        string
	OwnerVia    string `json:"owner_via"`
	Error       string
	Lines       int
	Open        bool
	Lifetime    *int64 `json:"lifetime_ns"`
	Handshake   *int64 `json:"handshake_ns"`
	ClosedFirst string `json:"closed_first"`
	Client      connEndLine
	Server      connEndLine

	LinesFiltered     int `json:"lines_filtered"`
	ConnectionsOpened int `json:"connections_opened"`
	SocketsOpened     int `json:"sockets_opened"`
	ConnectsRefused   int `json:"connects_refused"`
	raw               string
}

type connEndLine struct {
	Traced bool
	Port   int
	PID    int
	States []struct {
		State      string
		DurationNs *int64 `json:"duration_ns"`
	}
	Error string
}

func (e *connEndLine) states() string {
	var names []string
	for _, s := range e.States {
		names = append(names, s.State)
	}
	return strings.Join(names, ",")
}

// watchJSON starts a watch with --json and these flags in this process;
// the function returned stops it and returns its lines, the summary last.
func watchJSON(t *testing.T, args ...string) (stop func() []jsonLine) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append(args, "--json", "--ready-file", ready), &stdout, &stderr)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("porttrace %s stopped before it was ready: %v\n%s", args, err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("no ready file after 10s")
		}
	}
	return func() []jsonLine {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("porttrace %s: %v\n%s", args, err, stderr.String())
		}
		var lines []jsonLine
		for _, raw := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			ln := jsonLine{raw: raw}
			if err := json.Unmarshal([]byte(raw), &ln); err != nil {
				t.Fatalf("line %q: %v", raw, err)
			}
			lines = append(lines, ln)
		}
		if last := lines[len(lines)-1]; last.Type != "summary" || last.Lines != len(lines)-1 {
			t.Fatalf("last line %q: want the summary of the %d lines before it", last.raw, len(lines)-1)
		}
		return lines
	}
}

// dump is the lines of a watch, for a failure's message.
func dump(lines []jsonLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.raw + "\n")
	}
	return b.String()
}

// loopbackPair listens on 127.0.0.1:port, connects there and accepts: a
// listener and the two ends of one connection, for the caller to close.
func loopbackPair(t *testing.T, port int) (l net.Listener, client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	client, server = connectTo(t, l)
	return l, client, server
}

// connectTo makes one loopback connection to l: its client end and the
// end l accepted.
func connectTo(t *testing.T, l net.Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial(l.Addr().Network(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if server, err = l.Accept(); err != nil {
		t.Fatal(err)
	}
	return client, server
}

// connectAndClose makes one connection to a listener of its own on port,
// the client closing first (its socket ends in TIME_WAIT), and returns the
// client's port.
func connectAndClose(t *testing.T, port int) int {
	t.Helper()
	l, c, s := loopbackPair(t, port)
	defer l.Close()
	clientPort := c.LocalAddr().(*net.TCPAddr).Port
	c.Close()
	s.Read(make([]byte, 1)) // the client's FIN
	s.Close()
	return clientPort
}

// refuse connects to port, where nothing listens.
func refuse(t *testing.T, port int) {
	t.Helper()
	if c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		c.Close()
		t.Fatalf("something listens on %d", port)
	}
}

// TestFiltersOnRealTraffic runs a watch with each filter over the same
// traffic and checks that what it shows is all, and only, what the
// filter asks for.
func TestFiltersOnRealTraffic(t *testing.T) {
	needRoot(t)
	port, closed := freeLoopbackPort(t), freeLoopbackPort(t)
	ports := "--port=" + strconv.Itoa(port) + "," + strconv.Itoa(closed)
	// traffic: a connection closed by its client, a refused connect, and
	// a bind that fails.
	traffic := func() {
		connectAndClose(t, port)
		refuse(t, closed)
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if l2, err := net.Listen("tcp4", l.Addr().String()); err == nil {
			l2.Close()
			t.Fatal("a second listener on one port")
		}
	}
	for _, tc := range []struct {
		flags []string
		keep  func(l *jsonLine) bool
		want  []string // lines that must be there, as "type old->new error"
	}{{
		flags: []string{"--state", "TIME_WAIT"},
		keep:  func(l *jsonLine) bool { return l.Old == "TIME_WAIT" || l.New == "TIME_WAIT" },
		want:  []string{"state FIN_WAIT2->TIME_WAIT "},
	}, {
		flags: []string{"--failed"},
		keep:  func(l *jsonLine) bool { return l.Error != "" },
		want:  []string{"state SYN_SENT->CLOSE ECONNREFUSED", "bind -> EADDRINUSE"},
	}, {
		flags: []string{"--event", "bind,listen"},
		keep:  func(l *jsonLine) bool { return l.Type == "bind" || l.Type == "listen" },
		want:  []string{"bind -> ", "bind -> EADDRINUSE", "listen CLOSE->LISTEN "},
	}} {
		t.Run(strings.Join(tc.flags, " "), func(t *testing.T) {
			stop := watchJSON(t, append(tc.flags, ports)...)
			traffic()
			lines := stop()
			summary := lines[len(lines)-1]
			var got []string
			for _, l := range lines[:len(lines)-1] {
				if !tc.keep(&l) {
					t.Errorf("line %s shown", l.raw)
				}
				got = append(got, fmt.Sprintf("%s %s->%s %s", l.Type, l.Old, l.New, l.Error))
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("no %q line among:\n%s", w, dump(lines))
				}
			}
			if summary.LinesFiltered == 0 {
				t.Errorf("the summary says no line was left out: %s", summary.raw)
			}
		})
	}
}

// TestLinesInTimeOrder: a connection its server is slow to accept holds
// its server end's lines back until the accept, and the lines of the
// connections made and closed meanwhile wait for them: every line comes
// out in time order, none late, the held ones before those.
func TestLinesInTimeOrder(t *testing.T) {
	needRoot(t)
	slowPort, quickPort := freeLoopbackPort(t), freeLoopbackPort(t)
	stop := watchJSON(t, fmt.Sprintf("--port=%d,%d", slowPort, quickPort))
	slowL, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(slowPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer slowL.Close()
	slow, err := net.Dial("tcp4", slowL.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	waitServerEnd(t, slow)
	for range 5 {
		connectAndClose(t, quickPort)
	}
	// Long enough for the quick lines to have gone out, were it not for
	// the held ones (the delivery lag is 10 ms).
	time.Sleep(300 * time.Millisecond)
	accepted, err := slowL.Accept()
	if err != nil {
		t.Fatal(err)
	}
	accepted.Close()
	lines := stop()
	lines = lines[:len(lines)-1]
	held, firstQuick := -1, -1
	for i, l := range lines {
		if l.Late {
			t.Errorf("line %d late: %s", i, l.raw)
		}
		if i > 0 && l.Time.Before(lines[i-1].Time) {
			t.Errorf("line %d out of time order: %s after %s", i, l.raw, lines[i-1].raw)
		}
		switch {
		case l.SPort == slowPort && l.New == "SYN_RECV":
			held = i
		case firstQuick < 0 && (l.SPort == quickPort || l.DPort == quickPort) && l.Type == "state":
			firstQuick = i
		}
	}
	if held < 0 || firstQuick < 0 || held > firstQuick {
		t.Errorf("the slow connection's held SYN_RECV line (line %d) is not before the quick connections' (from line %d):\n%s", held, firstQuick, dump(lines))
	}
}

// plainConnection is a plain TCP connection over IPv4 loopback to a
// listener on port, which is closed when the test ends.
func plainConnection(t *testing.T) (port int, client, server net.Conn) {
	t.Helper()
	lc, _ := plain()
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	client, server = connectTo(t, l)
	return l.Addr().(*net.TCPAddr).Port, client, server
}

// TestWatchEveryPortKnowsOwnersOlderThanIt: a watch of every port starts
// from a snapshot of every socket, without a line for each: the line a
// softirq makes for a connection older than the watch (its server end
// taking the client's FIN) names the process holding it, not nobody.
func TestWatchEveryPortKnowsOwnersOlderThanIt(t *testing.T) {
	needRoot(t)
	port, client, server := plainConnection(t)
	defer server.Close()
	stop := watchJSON(t)
	client.Close()
	server.Read(make([]byte, 1)) // the client's FIN: CLOSE_WAIT
	lines := stop()
	found := false
	for _, ln := range lines {
		if ln.Type == "socket" {
			t.Errorf("an at-start line in a watch of every port: %s", ln.raw)
		}
		if ln.SPort == port && ln.New == "CLOSE_WAIT" {
			found = true
			if ln.PID != os.Getpid() || ln.OwnerVia != "snapshot" {
				t.Errorf("the server end's line names %d via %q, want this process (%d) via snapshot: %s", ln.PID, ln.OwnerVia, os.Getpid(), ln.raw)
			}
		}
	}
	if !found {
		t.Errorf("no CLOSE_WAIT line for the server end on port %d; lines of the port and the summary:\n%s", port, linesOfPort(lines, port))
	}
}

// TestWatchKnowsOwnersInOtherNamespaces: the watch traces every network
// namespace, and starts from a snapshot of all of them: a connection in
// another namespace, older than the watch, has its owner on the line its
// peer's FIN makes in a softirq (it read "-  ?" when the snapshot covered
// the watch's own namespace alone).
func TestWatchKnowsOwnersInOtherNamespaces(t *testing.T) {
	needRoot(t)
	h := startHolder(t, makeNetns(t))
	listening := h.do("listen 127.0.0.1:0")
	_, port, _ := net.SplitHostPort(listening)
	h.do("dial %s", listening)
	stop := watchJSON(t)
	h.exit() // its sockets close, each end's FIN takes the other to CLOSE_WAIT
	found := false
	lines := stop()
	for _, ln := range lines {
		if ln.New != "CLOSE_WAIT" || strconv.Itoa(ln.SPort) != port && strconv.Itoa(ln.DPort) != port {
			continue
		}
		found = true
		if ln.PID != h.pid || ln.OwnerVia != "snapshot" {
			t.Errorf("the CLOSE_WAIT line names %d via %q, want the holder (%d) via snapshot: %s", ln.PID, ln.OwnerVia, h.pid, ln.raw)
		}
	}
	if !found {
		n, _ := strconv.Atoi(port)
		t.Errorf("no CLOSE_WAIT line for the connection to port %s; lines of the port and the summary:\n%s", port, linesOfPort(lines, n))
	}
}

// linesOfPort are a watch's lines on either side of port, and its summary:
// what a failure shows.
func linesOfPort(lines []jsonLine, port int) string {
	var out []string
	for _, ln := range lines {
		if ln.SPort == port || ln.DPort == port || ln.Type == "summary" {
			out = append(out, ln.raw)
		}
	}
	return strings.Join(out, "\n")
}

// TestConnectionsEveryPortJoinsOldLocalConnections: a watch of every port
// with --connections knows both ends of a local connection older than it
// from the start: the server's reset, which ends its end before the
// client's first line, still makes one line with both ends, client and
// server in place (it made one line per end).
func TestConnectionsEveryPortJoinsOldLocalConnections(t *testing.T) {
	needRoot(t)
	port, client, server := plainConnection(t)
	defer client.Close()
	stop := watchJSON(t, "--connections")
	server.(*net.TCPConn).SetLinger(0)
	server.Close() // a reset
	client.Read(make([]byte, 1))
	client.Close()
	var lines []jsonLine
	for _, ln := range stop() {
		if ln.Type == "connection" && (ln.Server.Port == port || ln.Client.Port == port) {
			lines = append(lines, ln)
		}
	}
	if len(lines) != 1 || !lines[0].Client.Traced || !lines[0].Server.Traced || lines[0].Server.Port != port {
		t.Errorf("connection lines of port %d: %v, want one with both ends traced, the server on the port", port, lines)
	}
}

// TestWatchManyPortsStartsFromTheirSockets: a watch of several ports starts
// from one snapshot of every socket, cut to its ports: a listener older
// than it has its at-start line and its owner, a socket on another port
// none.
func TestWatchManyPortsStartsFromTheirSockets(t *testing.T) {
	needRoot(t)
	lc, _ := plain()
	var ports []int
	for range 2 {
		l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	watched, other := ports[0], ports[1]
	lines := watchJSON(t, fmt.Sprintf("--port=1-20,%d", watched))()
	found := false
	for _, ln := range lines {
		switch {
		case ln.Type == "socket" && ln.SPort == watched:
			found = true
			if ln.New != "LISTEN" || ln.PID != os.Getpid() || ln.OwnerVia != "snapshot" {
				t.Errorf("at-start line of the listener: %s, want LISTEN, this process (%d) via snapshot", ln.raw, os.Getpid())
			}
		case ln.SPort == other || ln.DPort == other:
			t.Errorf("a line of a port not watched: %s", ln.raw)
		}
	}
	if !found {
		t.Errorf("no at-start line for the listener on %d", watched)
	}
}

// waitServerEnd waits until the server end of c, a connection on this
// host, exists: the kernel makes it (SYN_RECV, then ESTABLISHED) when it
// processes the client's last ACK, which a loaded machine may do after
// the client's connect has returned.
func waitServerEnd(t *testing.T, c net.Conn) {
	t.Helper()
	// /proc/net/tcp: "sl local_address rem_address st ...", ports in hex,
	// 01 established.
	local := fmt.Sprintf(":%04X", c.RemoteAddr().(*net.TCPAddr).Port)
	remote := fmt.Sprintf(":%04X", c.LocalAddr().(*net.TCPAddr).Port)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 3 && strings.HasSuffix(f[1], local) && strings.HasSuffix(f[2], remote) && f[3] == "01" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no server end of %s -> %s after 5s", c.LocalAddr(), c.RemoteAddr())
		}
	}
}

// TestPIDFollowsChildren: --pid shows the sockets of the process's
// children forked during the watch, and not those of other processes.
func TestPIDFollowsChildren(t *testing.T) {
	needRoot(t)
	port := freeLoopbackPort(t)
	l := closingListener(t, port)
	defer l.Close()
	parent := exec.Command(os.Args[0])
	parent.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=spawn", "PORTTRACE_TEST_ADDR="+l.Addr().String())
	parentIn, err := parent.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	parentOut, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	parent.Stderr = os.Stderr
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Process.Kill()

	stop := watchJSON(t, "--port", strconv.Itoa(port), "--pid", strconv.Itoa(parent.Process.Pid))
	connectAndClose(t, freeLoopbackPort(t)) // another port: not watched at all
	if c, err := net.Dial("tcp4", l.Addr().String()); err == nil {
		c.Close() // this process's: not the parent's descendant
	}
	fmt.Fprintln(parentIn)
	childLine, err := bufio.NewReader(parentOut).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(childLine))
	if err := parent.Wait(); err != nil {
		t.Fatalf("the parent or its child failed: %v", err)
	}
	lines := stop()
	var connect bool
	for _, ln := range lines[:len(lines)-1] {
		if ln.PID != child {
			t.Errorf("line of pid %d shown, want only the child's, %d: %s", ln.PID, child, ln.raw)
		}
		connect = connect || ln.Old == "CLOSE" && ln.New == "SYN_SENT"
	}
	if !connect {
		t.Errorf("no connect of the child %d:\n%s", child, dump(lines))
	}
}

// TestConnectionsOnRealTraffic: --connections joins the two sockets of a
// local connection into one line, with both ends' owners and states; a
// reset ends one at once, a TIME_WAIT outlives the watch, a refused
// connect has only its client; the summary counts connections, not
// sockets.
func TestConnectionsOnRealTraffic(t *testing.T) {
	needRoot(t)
	port, closed := freeLoopbackPort(t), freeLoopbackPort(t)
	stop := watchJSON(t, "--connections", "--port", strconv.Itoa(port)+","+strconv.Itoa(closed))

	l, c, s := loopbackPair(t, port)
	resetPort := c.LocalAddr().(*net.TCPAddr).Port
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset
	s.Read(make([]byte, 1))
	s.Close()
	l.Close()
	closedPort := connectAndClose(t, port)
	refuse(t, closed)
	lines := stop()

	pid := os.Getpid()
	byClient := map[int]jsonLine{}
	for _, ln := range lines[:len(lines)-1] {
		if ln.Type != "connection" {
			t.Fatalf("line of type %q: %s", ln.Type, ln.raw)
		}
		byClient[ln.Client.Port] = ln
	}
	reset, ok1 := byClient[resetPort]
	closedFirst, ok2 := byClient[closedPort]
	if !ok1 || !ok2 || len(byClient) != 3 {
		t.Fatalf("want 3 connections, from ports %d, %d and the refused one:\n%s", resetPort, closedPort, dump(lines))
	}
	for _, check := range []struct {
		what string
		ok   bool
	}{
		{"reset: both ends traced, owned by this process", reset.Client.Traced && reset.Server.Traced && reset.Client.PID == pid && reset.Server.PID == pid && reset.Server.Port == port},
		{"reset: ended during the watch, closed first by the client, the server's end reset", !reset.Open && reset.ClosedFirst == "client" && reset.Server.Error == "ECONNRESET" && reset.Error == "ECONNRESET"},
		{"reset: handshake and lifetime known", reset.Handshake != nil && reset.Lifetime != nil},
		{"reset: client SYN_SENT,ESTABLISHED; server SYN_RECV,ESTABLISHED", reset.Client.states() == "SYN_SENT,ESTABLISHED" && reset.Server.states() == "SYN_RECV,ESTABLISHED"},
		{"closed: open when the watch ended, the client in TIME_WAIT", closedFirst.Open && closedFirst.ClosedFirst == "client" &&
			closedFirst.Client.states() == "SYN_SENT,ESTABLISHED,FIN_WAIT1,FIN_WAIT2,TIME_WAIT" &&
			closedFirst.Server.states() == "SYN_RECV,ESTABLISHED,CLOSE_WAIT,LAST_ACK"},
	} {
		if !check.ok {
			t.Errorf("%s:\n%s", check.what, dump(lines))
		}
	}
	for port, ln := range byClient {
		if port != resetPort && port != closedPort && (ln.Error != "ECONNREFUSED" || ln.Server.Traced || ln.Client.states() != "SYN_SENT" || ln.Server.Port != closed) {
			t.Errorf("refused connect: %s", ln.raw)
		}
	}
	if summary := lines[len(lines)-1]; summary.ConnectionsOpened != 2 || summary.SocketsOpened != 4 || summary.ConnectsRefused != 1 {
		t.Errorf("summary %s: want 2 connections opened, 4 sockets, 1 refused connect", summary.raw)
	}
}

// TestContainerFilter puts a process in a cgroup named as Docker's
// cgroupfs driver names a container's, and watches with --container: only
// that process's sockets are shown.
func TestContainerFilter(t *testing.T) {
	needRoot(t)
	root := cgroup2Root(t)
	id := fmt.Sprintf("%016x", time.Now().UnixNano()) + strings.Repeat("c0ffee", 8)
	parent := filepath.Join(root, "docker")
	if _, err := os.Stat(parent); os.IsNotExist(err) {
		defer os.Remove(parent) // made here: leave nothing behind
	}
	dir := filepath.Join(parent, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	port := freeLoopbackPort(t)
	l := closingListener(t, port)
	defer l.Close()

	stop := watchJSON(t, "--port", strconv.Itoa(port), "--container", id[:12])
	if c, err := net.Dial("tcp4", l.Addr().String()); err == nil {
		c.Close() // this process's, outside the container
	}
	inside := exec.Command(os.Args[0])
	inside.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=connect", "PORTTRACE_TEST_ADDR="+l.Addr().String(), "PORTTRACE_TEST_CGROUP="+dir)
	inside.Stderr = os.Stderr
	if err := inside.Run(); err != nil {
		t.Fatalf("the process in the container: %v", err)
	}
	lines := stop()
	var connect bool
	for _, ln := range lines[:len(lines)-1] {
		if ln.PID != inside.Process.Pid {
			t.Errorf("line of pid %d shown, want only those of %d, in the container: %s", ln.PID, inside.Process.Pid, ln.raw)
		}
		connect = connect || ln.Old == "CLOSE" && ln.New == "SYN_SENT"
	}
	if !connect {
		t.Errorf("no connect of the process in the container:\n%s", dump(lines))
	}
}

// cgroup2Root is where the cgroup2 file system is mounted
// (/sys/fs/cgroup/unified on a hybrid machine).
func cgroup2Root(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i := slices.Index(f, "-"); i > 4 && i+1 < len(f) && f[i+1] == "cgroup2" {
			return f[4]
		}
	}
	t.Fatal("no cgroup2 file system mounted")
	return ""
}
