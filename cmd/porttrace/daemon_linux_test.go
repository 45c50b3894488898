package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/history"
	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// The daemon's tests run `porttrace daemon` as its own process, as an
// operator would, with its socket and data in a test's folder, and drive it
// with socket-holding processes (the role "sockets", in this namespace or
// in one the test makes) and API clients.

func init() {
	testRoles["sockets"] = holdSockets
	testRoles["ask-daemon"] = askDaemon
}

// daemonRun is a daemon a test started.
type daemonRun struct {
	cmd     *exec.Cmd
	stderr  *lockedBuffer
	socket  string
	dataDir string
	exited  chan error
}

// daemonStartTimeout bounds the daemon's start: loading its programs and
// the starting snapshot of every socket.
const daemonStartTimeout = 30 * time.Second

// startDaemon runs porttrace daemon with its socket and data in dir, and
// waits until it answers.
func startDaemon(t *testing.T, dir string, args ...string) *daemonRun {
	t.Helper()
	d := &daemonRun{socket: filepath.Join(dir, "api.sock"), dataDir: filepath.Join(dir, "data"), exited: make(chan error, 1)}
	d.start(t, args...)
	d.waitServing(t)
	return d
}

// start starts the daemon's process without waiting for it to serve.
func (d *daemonRun) start(t *testing.T, args ...string) {
	t.Helper()
	argv := append([]string{"daemon", "--socket", d.socket, "--data-dir", d.dataDir}, args...)
	d.cmd = exec.Command(os.Args[0])
	d.cmd.Env = append(os.Environ(), "PORTTRACE_ARGS="+strings.Join(argv, " "))
	d.stderr = &lockedBuffer{}
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
		d.exited <- nil // for a later wait
		if t.Failed() {
			t.Logf("the daemon's log:\n%s", d.stderr.String())
		}
	})
}

// waitServing returns once the daemon answers on its socket.
func (d *daemonRun) waitServing(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(daemonStartTimeout); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.Ask(ctx, d.socket, 1, false)
		cancel()
		if err == nil {
			return
		}
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("the daemon stopped before it served: %v; stderr: %s", err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon does not answer after %v: %v; stderr: %s", daemonStartTimeout, err, d.stderr.String())
		}
	}
}

// signal sends sig to the daemon and waits for it to exit, at most
// within (a hang detector); it returns how long that took and how it
// exited.
func (d *daemonRun) stop(t *testing.T, sig syscall.Signal, within time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		d.exited <- err
		return time.Since(start), err
	case <-time.After(within):
		t.Fatalf("the daemon did not stop within %v of %v; stderr: %s", within, sig, d.stderr.String())
	}
	return 0, nil
}

// who asks the daemon who holds port, from this process's namespace.
func (d *daemonRun) who(t *testing.T, port int) *api.WhoResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := api.Who(ctx, d.socket, uint16(port))
	if err != nil {
		t.Fatalf("asking the daemon: %v; stderr: %s", err, d.stderr.String())
	}
	return resp
}

// holdSockets is the role "sockets": it makes and holds sockets as told on
// stdin, one command a line, and answers each with one line: "ok" and a
// result, or "error" and why. It exits when stdin closes.
func holdSockets() {
	h := &socketHolder{listeners: map[string]net.Listener{}}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		result, err := h.do(strings.Fields(in.Text()))
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		fmt.Println("ok", result)
	}
	for _, c := range h.children {
		c.Process.Kill()
		c.Wait()
	}
}

type socketHolder struct {
	listeners map[string]net.Listener
	mu        sync.Mutex
	kept      []io.Closer // what the accepting goroutines keep too
	children  []*exec.Cmd
	stopBinds chan struct{}
}

// plain is TCP without MPTCP, as a C program makes it (Go listens and
// dials with MPTCP by default).
func plain() (net.ListenConfig, net.Dialer) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	var d net.Dialer
	d.SetMultipathTCP(false)
	return lc, d
}

func (h *socketHolder) do(cmd []string) (string, error) {
	if len(cmd) < 2 {
		return "", fmt.Errorf("want a command and an address: %q", cmd)
	}
	lc, d := plain()
	network, addr := "tcp", cmd[1]
	switch cmd[0] {
	case "listen", "listen-reuseport", "listen-mptcp", "listen-closing", "listen-eof":
		var l net.Listener
		var err error
		switch cmd[0] {
		case "listen-reuseport":
			l, err = linux.ListenReusePort(network, addr)
		case "listen-mptcp":
			l, err = net.Listen(network, addr)
		default:
			l, err = lc.Listen(context.Background(), network, addr)
		}
		if err != nil {
			return "", err
		}
		h.listeners[l.Addr().String()] = l
		go h.accept(l, cmd[0])
		return l.Addr().String(), nil
	case "close":
		l, ok := h.listeners[addr]
		if !ok {
			return "", fmt.Errorf("no listener on %s", addr)
		}
		delete(h.listeners, addr)
		return addr, l.Close()
	case "dial", "dial-close", "dial-eof":
		c, err := d.Dial(network, addr)
		if err != nil {
			return "", err
		}
		local := c.LocalAddr().String()
		switch cmd[0] {
		case "dial":
			h.keep(c)
		case "dial-close":
			c.Close()
		case "dial-eof":
			// The server closes first: wait for its FIN, then close.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := io.Copy(io.Discard, c)
			c.Close()
			if err != nil {
				return "", err
			}
		}
		return local, nil
	case "udp":
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return "", err
		}
		h.keep(c)
		return c.LocalAddr().String(), nil
	case "fork":
		// A pre-fork server: a child inherits the listener on addr.
		l, ok := h.listeners[addr]
		if !ok {
			return "", fmt.Errorf("no listener on %s", addr)
		}
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			return "", err
		}
		defer f.Close()
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=inherit")
		child.ExtraFiles = []*os.File{f}
		if err := child.Start(); err != nil {
			return "", err
		}
		h.children = append(h.children, child)
		return strconv.Itoa(child.Process.Pid), nil
	case "fail-binds":
		// bind(2) to addr, held by another socket, at the interval given,
		// until stdin closes: failed binds for history.
		if len(cmd) != 3 {
			return "", fmt.Errorf("fail-binds takes an address and an interval")
		}
		every, err := time.ParseDuration(cmd[2])
		if err != nil {
			return "", err
		}
		go func() {
			for {
				if l, err := lc.Listen(context.Background(), network, addr); err == nil {
					l.Close()
				}
				time.Sleep(every)
			}
		}()
		return addr, nil
	}
	return "", fmt.Errorf("unknown command %q", cmd[0])
}

func (h *socketHolder) keep(c io.Closer) {
	h.mu.Lock()
	h.kept = append(h.kept, c)
	h.mu.Unlock()
}

// accept keeps what l accepts; a listener made by "listen-closing" closes
// it at once (the server closes first), one made by "listen-eof" once the
// client has closed (the client closes first).
func (h *socketHolder) accept(l net.Listener, how string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		switch how {
		case "listen-closing":
			c.Close()
		case "listen-eof":
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		default:
			h.keep(c)
		}
	}
}

// holder is a "sockets" role process.
type holder struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	pid int
}

// startHolder starts a "sockets" role process, in the network namespace
// netns (an ip netns name) unless it is "".
func startHolder(t *testing.T, netns string) *holder {
	t.Helper()
	argv := []string{os.Args[0]}
	if netns != "" {
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=sockets")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holder{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), pid: cmd.Process.Pid}
	t.Cleanup(h.exit)
	return h
}

// do sends one command and returns its result.
func (h *holder) do(command string, args ...any) string {
	h.t.Helper()
	line := fmt.Sprintf(command, args...)
	if _, err := fmt.Fprintln(h.in, line); err != nil {
		h.t.Fatal(err)
	}
	reply, err := h.out.ReadString('\n')
	if err != nil {
		h.t.Fatalf("%s: no answer: %v", line, err)
	}
	result, ok := strings.CutPrefix(strings.TrimSpace(reply), "ok ")
	if !ok {
		h.t.Fatalf("%s: %s", line, reply)
	}
	return result
}

// exit closes the holder's stdin, which ends it and its children.
func (h *holder) exit() {
	h.in.Close()
	done := make(chan struct{})
	go func() {
		h.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
}

// makeNetns makes a network namespace with its loopback up, removed when
// the test ends.
func makeNetns(t *testing.T) string {
	t.Helper()
	name := "porttrace-test-" + strconv.Itoa(os.Getpid())
	for _, argv := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(argv, " "), err, out)
		}
		if argv[0] == "netns" {
			t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
		}
	}
	return name
}

// askDaemon is the role "ask-daemon": it asks the daemon on
// PORTTRACE_TEST_SOCKET who holds PORTTRACE_TEST_PORT, from the namespace
// it runs in, and prints the answer as JSON.
func askDaemon() {
	port, _ := strconv.Atoi(os.Getenv("PORTTRACE_TEST_PORT"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := api.Who(ctx, os.Getenv("PORTTRACE_TEST_SOCKET"), uint16(port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(resp)
}

// whoFrom asks the daemon about port from a process in netns ("": this
// namespace).
func (d *daemonRun) whoFrom(t *testing.T, netns string, port int) *api.WhoResponse {
	t.Helper()
	argv := []string{os.Args[0]}
	if netns != "" {
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=ask-daemon", "PORTTRACE_TEST_SOCKET="+d.socket, "PORTTRACE_TEST_PORT="+strconv.Itoa(port))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("asking the daemon from %q: %v: %s; the daemon's stderr: %s", netns, err, stderr.String(), d.stderr.String())
	}
	var resp api.WhoResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("the daemon's answer %s: %v", out, err)
	}
	return &resp
}

// sockKey is what tells sockets apart when the test compares two reports.
type sockKey struct {
	Proto         tracer.Proto
	State         tracer.State
	Local, Remote netip.AddrPort
	NetNS         uint32
}

func keyOfSocket(s *snapshot.PortSocket) sockKey {
	return sockKey{s.Proto, s.State, s.Local, s.Remote, s.NetNS}
}

func (k sockKey) String() string {
	return fmt.Sprintf("%s %s %s->%s netns %d", k.Proto, k.State, k.Local, k.Remote, k.NetNS)
}

// compareWho lists how the daemon's answer differs from the one-shot
// report: the same sockets (by protocol, state, ends and namespace; by
// inode where a process holds one); each held socket held by the daemon's
// account too, by one of its holders (from the cache) or by all of them
// (from a walk), with their descriptors; a TIME_WAIT owner the daemon
// names equal to the one the one-shot names.
func compareWho(answer *api.WhoResponse, oneShot *snapshot.PortReport) []string {
	daemon := answer.Report
	var diffs []string
	count := func(r *snapshot.PortReport) map[sockKey]int {
		m := map[sockKey]int{}
		for i := range r.Sockets {
			m[keyOfSocket(&r.Sockets[i])]++
		}
		return m
	}
	dk, ok := count(daemon), count(oneShot)
	for k, n := range ok {
		if dk[k] != n {
			diffs = append(diffs, fmt.Sprintf("%s: %d in the one-shot report, %d in the daemon's", k, n, dk[k]))
		}
	}
	for k, n := range dk {
		if _, both := ok[k]; !both {
			diffs = append(diffs, fmt.Sprintf("%s: %d in the daemon's report, none in the one-shot's", k, n))
		}
	}
	byInode := map[uint64]*snapshot.PortSocket{}
	byKey := map[sockKey][]*snapshot.PortSocket{}
	for i := range oneShot.Sockets {
		s := &oneShot.Sockets[i]
		if s.Inode != 0 {
			byInode[s.Inode] = s
		}
		byKey[keyOfSocket(s)] = append(byKey[keyOfSocket(s)], s)
	}
	for i := range daemon.Sockets {
		s := &daemon.Sockets[i]
		var o *snapshot.PortSocket
		if s.Inode != 0 {
			o = byInode[s.Inode]
		} else if same := byKey[keyOfSocket(s)]; len(same) == 1 {
			o = same[0]
		}
		if o == nil {
			continue // counted above
		}
		k := keyOfSocket(s)
		switch {
		case len(s.PIDs) > 0 != (len(o.PIDs) > 0):
			diffs = append(diffs, fmt.Sprintf("%s (inode %d): held by %v by the daemon's account, by %v by the one-shot's", k, s.Inode, s.PIDs, o.PIDs))
		case !slices.Equal(slices.Sorted(slices.Values(s.PIDs)), slices.Sorted(slices.Values(o.PIDs))):
			diffs = append(diffs, fmt.Sprintf("%s (inode %d): the daemon's %s names %v, the one-shot %v", k, s.Inode, answer.From, s.PIDs, o.PIDs))
		}
		// Where the daemon names holders, it read their descriptors.
		if len(s.FDs) != len(s.PIDs) {
			diffs = append(diffs, fmt.Sprintf("%s: the daemon names holders %v with descriptors %v", k, s.PIDs, s.FDs))
		} else {
			for i, pid := range s.PIDs {
				if j := slices.Index(o.PIDs, pid); j >= 0 && j < len(o.FDs) && o.FDs[j] != s.FDs[i] {
					diffs = append(diffs, fmt.Sprintf("%s: the daemon has %d hold it as fd %d, the one-shot as fd %d", k, pid, s.FDs[i], o.FDs[j]))
				}
			}
		}
		for _, pid := range s.PIDs {
			dp, op := daemon.Processes[pid], oneShot.Processes[pid]
			switch {
			case !slices.Contains(o.PIDs, pid):
				diffs = append(diffs, fmt.Sprintf("%s (inode %d): the daemon names %d, not one of its holders %v", k, s.Inode, pid, o.PIDs))
			case dp == nil || op == nil || dp.Name != op.Name || dp.StartNs != op.StartNs:
				diffs = append(diffs, fmt.Sprintf("%s: the daemon's process %+v, the one-shot's %+v", k, dp, op))
			}
		}
		if s.Seen != nil && o.Seen != nil && (s.Seen.PID != o.Seen.PID || s.Seen.StartNs != o.Seen.StartNs) {
			diffs = append(diffs, fmt.Sprintf("%s: the daemon saw %d (start %d) own it, the one-shot names %d (start %d)", k, s.Seen.PID, s.Seen.StartNs, o.Seen.PID, o.Seen.StartNs))
		}
	}
	slices.Sort(diffs)
	return diffs
}

// oneShot answers who for port in netns ("": this namespace) as porttrace
// who does without a daemon, naming TIME_WAIT owners with what the daemon
// says it saw (as who does with any running porttrace).
func (d *daemonRun) oneShot(t *testing.T, netns string, port int) *snapshot.PortReport {
	t.Helper()
	ns, err := linux.CurrentNamespace()
	if netns != "" {
		ns, err = linux.FindNamespace(netns)
	}
	if err != nil {
		t.Fatal(err)
	}
	r, err := linux.WhoIn(uint16(port), []linux.Namespace{ns}, proc.NewResolver())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	owners, err := api.Ask(ctx, d.socket, uint16(port), false)
	if err != nil {
		t.Fatal(err)
	}
	r.NameSeen(api.Seen(owners.Sockets), identify)
	return r
}

// timeWaitEnds are a TIME_WAIT socket's local and remote ends.
type timeWaitEnds [2]netip.AddrPort

// timeWaitOwners lists how the TIME_WAIT sockets in want (by their ends)
// on port differ in the daemon's answer: each must be there, naming want's
// process.
func timeWaitOwners(r *snapshot.PortReport, port int, want map[timeWaitEnds]int) []string {
	var diffs []string
	found := map[timeWaitEnds]bool{}
	for _, s := range r.Sockets {
		ends := timeWaitEnds{s.Local, s.Remote}
		pid, ok := want[ends]
		if s.State != tracer.StateTimeWait || !ok {
			continue
		}
		found[ends] = true
		if s.Seen == nil || int(s.Seen.PID) != pid {
			diffs = append(diffs, fmt.Sprintf("TIME_WAIT %s->%s: the daemon saw %+v own it, want pid %d", s.Local, s.Remote, s.Seen, pid))
		}
	}
	for ends := range want {
		if (ends[0].Port() == uint16(port) || ends[1].Port() == uint16(port)) && !found[ends] {
			diffs = append(diffs, fmt.Sprintf("TIME_WAIT %s->%s is not in the daemon's answer", ends[0], ends[1]))
		}
	}
	return diffs
}

// TestDaemonWhoMatchesSnapshot: on a mixed population of sockets (plain,
// MPTCP, SO_REUSEPORT and pre-fork listeners, both ends of connections,
// TIME_WAIT on either side, UDP beside TCP on one address) in two network
// namespaces, the daemon's who answers each asker for its own namespace,
// with the sockets the one-shot snapshot lists and an owner among each
// held socket's holders, from its cache where the port has TCP only, and
// with a walk where a UDP socket shares the port.
func TestDaemonWhoMatchesSnapshot(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, t.TempDir())
	netns := makeNetns(t)
	tcpPort, udpPort := freeLoopbackPort(t), freeLoopbackPort(t)

	// populate makes the same population in one namespace and returns
	// the owners of the TIME_WAIT sockets it made, by their ends.
	populate := func(netns string) map[timeWaitEnds]int {
		server, client, other := startHolder(t, netns), startHolder(t, netns), startHolder(t, netns)
		timeWait := map[timeWaitEnds]int{}
		for _, port := range []int{tcpPort, udpPort} {
			v4, v6 := net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), net.JoinHostPort("::1", strconv.Itoa(port))
			server.do("listen %s", v4)
			server.do("listen-mptcp %s", v6)
			for _, h := range []*holder{server, other} {
				h.do("listen-reuseport 127.0.0.2:%d", port)
			}
			server.do("fork 127.0.0.2:%d", port)
			for range 3 {
				client.do("dial %s", v4)
				client.do("dial %s", v6)
				client.do("dial 127.0.0.2:%d", port)
			}
			// Client-side TIME_WAIT: the client closes first.
			eof := server.do("listen-eof 127.0.0.4:%d", port)
			for range 2 {
				local := client.do("dial-close %s", eof)
				timeWait[timeWaitEnds{netip.MustParseAddrPort(local), netip.MustParseAddrPort(eof)}] = client.pid
			}
			// Server-side TIME_WAIT on the port: the server closes
			// first (its listener closes what it accepts).
			closing := server.do("listen-closing 127.0.0.3:%d", port)
			for range 2 {
				local := client.do("dial-eof %s", closing)
				timeWait[timeWaitEnds{netip.MustParseAddrPort(closing), netip.MustParseAddrPort(local)}] = server.pid
			}
		}
		// UDP on the address a TCP listener of another process holds.
		other.do("udp 127.0.0.1:%d", udpPort)
		other.do("udp [::1]:%d", udpPort)
		return timeWait
	}
	timeWaitHere, timeWaitThere := populate(""), populate(netns)

	// The daemon publishes what it learns every 100 ms: ask until the
	// answers agree, for at most 10 s.
	for _, tc := range []struct {
		netns    string
		port     int
		from     string
		timeWait map[timeWaitEnds]int
	}{
		{"", tcpPort, "cache", timeWaitHere},
		{"", udpPort, "walk", timeWaitHere},
		{netns, tcpPort, "cache", timeWaitThere},
		{netns, udpPort, "walk", timeWaitThere},
	} {
		t.Run(fmt.Sprintf("netns %q port %d", tc.netns, tc.port), func(t *testing.T) {
			want, err := linux.CurrentNamespace()
			if tc.netns != "" {
				want, err = linux.FindNamespace(tc.netns)
			}
			if err != nil {
				t.Fatal(err)
			}
			var diffs []string
			var got *api.WhoResponse
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				got = d.whoFrom(t, tc.netns, tc.port)
				diffs = append(compareWho(got, d.oneShot(t, tc.netns, tc.port)), timeWaitOwners(got.Report, tc.port, tc.timeWait)...)
				if len(diffs) == 0 && got.From == tc.from || time.Now().After(deadline) {
					break
				}
			}
			if len(diffs) > 0 {
				t.Errorf("the daemon's who differs from the one-shot's:\n%s", strings.Join(diffs, "\n"))
			}
			if got.From != tc.from {
				t.Errorf("answered from the %s, want the %s", got.From, tc.from)
			}
			for _, s := range got.Report.Sockets {
				if s.NetNS != want.Inode {
					t.Errorf("%s->%s: in namespace %d, want the asker's, %d", s.Local, s.Remote, s.NetNS, want.Inode)
				}
			}
			if len(got.Report.Sockets) < 20 {
				t.Errorf("only %d sockets in the answer: the population is missing", len(got.Report.Sockets))
			}
		})
	}

	// porttrace who, run in the other namespace, asks the daemon and
	// prints the TIME_WAIT owners it saw.
	cmd := exec.Command("ip", "netns", "exec", netns, os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_ARGS=who --json --verbose --socket "+d.socket+" "+strconv.Itoa(tcpPort))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !strings.Contains(stderr.String(), "porttrace: answered by the daemon on "+d.socket+" (from its cache)") {
		t.Fatalf("porttrace who in %s: %v; stderr: %s", netns, err, stderr.String())
	}
	var report struct {
		Sockets []struct {
			State, Saddr, Daddr string
			Sport, Dport        uint16
			Seen                *struct{ PID int }
		}
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("porttrace who --json: %v: %s", err, out)
	}
	named := 0
	for _, s := range report.Sockets {
		ends := timeWaitEnds{netip.AddrPortFrom(netip.MustParseAddr(s.Saddr), s.Sport), netip.AddrPortFrom(netip.MustParseAddr(s.Daddr), s.Dport)}
		if pid, ok := timeWaitThere[ends]; ok && s.Seen != nil && s.Seen.PID == pid {
			named++
		}
	}
	if named != 4 {
		t.Errorf("porttrace who in %s names the owners of %d TIME_WAIT sockets of 4: %s", netns, named, out)
	}
}

// eventually calls check until it returns "" (all is well), for at most
// within (a hang detector), and fails with what it last said.
func eventually(t *testing.T, within time.Duration, what string, check func() string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if last = check(); last == "" {
			return
		}
	}
	t.Fatalf("%s: not after %v: %s", what, within, last)
}

// agrees says how the daemon's answer about port, asked from this
// namespace, differs from the one-shot report and from where it should
// have come ("" when it does not).
func (d *daemonRun) agrees(t *testing.T, port int, from string) string {
	t.Helper()
	got := d.who(t, port)
	diffs := compareWho(got, d.oneShot(t, "", port))
	if got.From != from {
		diffs = append(diffs, "answered from the "+got.From+", want the "+from)
	}
	return strings.Join(diffs, "\n")
}

// loopback is 127.0.0.1:port.
func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// buildPortstorm builds the load generator, cmd/portstorm.
func buildPortstorm(t *testing.T) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building cmd/portstorm needs the go command: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "portstorm")
	if out, err := exec.Command(goCmd, "build", "-o", bin, "github.com/porttrace/porttrace/cmd/portstorm").CombinedOutput(); err != nil {
		t.Fatalf("building cmd/portstorm: %v: %s", err, out)
	}
	return bin
}

// storm runs portstorm: conns loopback connections on port.
func storm(portstorm string, port, conns int) *exec.Cmd {
	return exec.Command(portstorm, "--port", strconv.Itoa(port), "--conns", strconv.Itoa(conns), "--workers", "4")
}

// TestDaemonRepairsLosses: events lost in a storm (the daemon stopped, its
// ring buffer of 1 MiB full) leave it wrong only until it reconciles: a
// listener closed and opened again by another process meanwhile, and a
// listener and a connection opened during a storm, are then owned right,
// from its cache.
func TestDaemonRepairsLosses(t *testing.T) {
	needRoot(t)
	portstorm := buildPortstorm(t)
	d := startDaemon(t, t.TempDir(), "--buffer-size", "1")
	first, second := startHolder(t, ""), startHolder(t, "")
	reopened, opened := freeLoopbackPort(t), freeLoopbackPort(t)
	first.do("listen %s", loopback(reopened))
	eventually(t, 10*time.Second, "the daemon names the first listener's owner", func() string { return d.agrees(t, reopened, "cache") })

	// Stopped, the daemon reads nothing: the first storm fills its ring,
	// and whatever happens after is lost.
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			d.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	if out, err := storm(portstorm, freeLoopbackPort(t), 5000).CombinedOutput(); err != nil {
		t.Fatalf("portstorm: %v: %s", err, out)
	}
	during := storm(portstorm, freeLoopbackPort(t), 5000)
	var stormOut strings.Builder
	during.Stdout, during.Stderr = &stormOut, &stormOut
	if err := during.Start(); err != nil {
		t.Fatal(err)
	}
	first.do("close %s", loopback(reopened))
	second.do("listen %s", loopback(reopened))
	second.do("listen %s", loopback(opened))
	first.do("dial %s", loopback(opened))
	if err := during.Wait(); err != nil {
		t.Fatalf("portstorm: %v: %s", err, stormOut.String())
	}
	if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true

	eventually(t, 15*time.Second, "the daemon reports the loss and reconciles", func() string {
		if !strings.Contains(d.stderr.String(), "events lost") || !strings.Contains(d.stderr.String(), "reconciling with a fresh snapshot") {
			return "its log: " + d.stderr.String()
		}
		return ""
	})
	for _, port := range []int{reopened, opened} {
		eventually(t, 10*time.Second, fmt.Sprintf("port %d owned right after the loss", port), func() string { return d.agrees(t, port, "cache") })
	}
	if r := d.who(t, reopened).Report; !r.Holds(uint32(second.pid)) || r.Holds(uint32(first.pid)) {
		t.Errorf("the reopened listener: held by %v, want only %d", r.PIDs(), second.pid)
	}
}

// TestDaemonNamesOlderTimeWait: TIME_WAIT sockets on a port from before
// the daemon started, which it never saw held, are in its who as in the
// one-shot's.
func TestDaemonNamesOlderTimeWait(t *testing.T) {
	needRoot(t)
	server, client := startHolder(t, ""), startHolder(t, "")
	port := freeLoopbackPort(t)
	closing := server.do("listen-closing %s", loopback(port))
	for range 3 {
		client.do("dial-eof %s", closing)
	}
	d := startDaemon(t, t.TempDir())
	eventually(t, 10*time.Second, "the daemon's who on the port", func() string { return d.agrees(t, port, "cache") })
	n := 0
	for _, s := range d.who(t, port).Report.Sockets {
		if s.State == tracer.StateTimeWait {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d TIME_WAIT sockets in the daemon's who, want 3", n)
	}
}

// TestDaemonManyClients: a client that connects and never reads or writes
// blocks nobody and is dropped; 1,000 clients asking at once are all
// answered, rightly.
func TestDaemonManyClients(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, t.TempDir())
	server := startHolder(t, "")
	port := freeLoopbackPort(t)
	server.do("listen %s", loopback(port))
	eventually(t, 10*time.Second, "the daemon names the listener's owner", func() string { return d.agrees(t, port, "cache") })

	silent, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	const clients = 1000
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			resp, err := api.Who(ctx, d.socket, uint16(port))
			if err == nil && !resp.Report.Holds(uint32(server.pid)) {
				err = fmt.Errorf("the answer names %v, not %d", resp.Report.PIDs(), server.pid)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	var first error
	for err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d clients asking at once got no right answer; the first: %v", failed, clients, first)
	}
	// The silent client is dropped after the request timeout (2 s).
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the silent client: read %v, want EOF (dropped by the daemon)", err)
	}
}

// rawRequest sends request on a connection of its own and reads the
// answer.
func rawRequest(t *testing.T, socket, request string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, request) // an oversized one is answered before it is all read
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%.60q: no answer: %v", request, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestDaemonBadRequests: oversized and malformed requests are refused,
// each with its status and a reason, and the daemon goes on answering.
func TestDaemonBadRequests(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, t.TempDir())
	port := freeLoopbackPort(t)
	for _, tc := range []struct {
		name, request string
		status        int
		body          string
	}{
		{"a request line of a megabyte", "GET /v1/who?port=80&pad=" + strings.Repeat("x", 1<<20) + " HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge, ""},
		{"a thousand headers", "GET /v1/who?port=80 HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Pad: 0123456789abcdef\r\n", 1000) + "\r\n", http.StatusRequestHeaderFieldsTooLarge, ""},
		{"not HTTP", "NONSENSE\r\n\r\n", http.StatusBadRequest, ""},
		{"a binary request", "\x00\x01\x02\xff\r\n\r\n", http.StatusBadRequest, ""},
		{"no port", "GET /v1/who HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, "port must be a number from 1 to 65535"},
		{"a port that is not a number", "GET /v1/who?port=http HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, "port must be a number from 1 to 65535"},
		{"port 70000", "GET /v1/owners?port=70000 HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, "port must be a number from 1 to 65535"},
		{"a time that is not a number", "GET /v1/history?port=80&since=yesterday HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, "since must be nanoseconds since the epoch"},
		{"another method", "POST /v1/who?port=80 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", http.StatusMethodNotAllowed, ""},
		{"another version", "GET /v2/who?port=80 HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawRequest(t, d.socket, tc.request)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("answered %s %q, want %d and %q", resp.Status, body, tc.status, tc.body)
			}
			d.who(t, port) // still answering
		})
	}
	if strings.Contains(d.stderr.String(), "panic") {
		t.Errorf("the daemon's log: %s", d.stderr.String())
	}
}

// TestDaemonStaleSocket: a socket file left by a killed daemon is
// replaced; a file that is no socket, or a socket another daemon serves,
// stops a second daemon at once with one line saying so.
func TestDaemonStaleSocket(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	stale := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	live := startDaemon(t, dir) // serves where the stale socket was

	for _, tc := range []struct {
		name, socket, want string
	}{
		{"a live daemon's socket", live.socket, "porttrace: another porttrace already serves " + live.socket + "\n"},
		{"a regular file", filepath.Join(dir, "file"), "porttrace: " + filepath.Join(dir, "file") + " exists and is not a socket: remove it\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(filepath.Join(dir, "file"), nil, 0o600)
			second := &daemonRun{socket: tc.socket, dataDir: t.TempDir(), exited: make(chan error, 1)}
			second.start(t)
			var exit *exec.ExitError
			select {
			case err := <-second.exited:
				second.exited <- err
				if !errors.As(err, &exit) || exit.ExitCode() != 1 {
					t.Errorf("exited with %v, want status 1", err)
				}
			case <-time.After(daemonStartTimeout):
				t.Fatalf("still running after %v; stderr: %s", daemonStartTimeout, second.stderr.String())
			}
			// Before it loads or attaches anything (it once attached
			// every probe and took a snapshot first).
			if got := second.stderr.String(); got != tc.want {
				t.Errorf("stderr %q, want %q alone", got, tc.want)
			}
		})
	}
	live.who(t, 1) // the first still serves
}

// history asks the daemon what it recorded of port between since and
// until.
func (d *daemonRun) history(t *testing.T, port int, since, until time.Time) *history.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := api.History(ctx, d.socket, uint16(port), since, until)
	if err != nil {
		t.Fatalf("asking the daemon's history: %v; stderr: %s", err, d.stderr.String())
	}
	return res
}

// holders describes the holders history has of a port that are process
// pid: since when, and "holding" or how it ended.
func holders(res *history.Result, pid int) []string {
	var out []string
	for _, h := range res.Holders {
		if int(h.Owner.PID) != pid {
			continue // this test's probes for a free port, say
		}
		end := h.End.String()
		if h.Held() {
			end = "holding"
		}
		out = append(out, fmt.Sprintf("from %d %s", h.FromNs, end))
	}
	return out
}

// TestDaemonHistoryAnswersAtOnce: once the daemon names a listener's owner
// from its cache, its history has the listener: history commits twice a
// second, and a question must not wait for that.
func TestDaemonHistoryAnswersAtOnce(t *testing.T) {
	needRoot(t)
	start := time.Now()
	d := startDaemon(t, t.TempDir())
	server := startHolder(t, "")
	port := freeLoopbackPort(t)
	server.do("listen %s", loopback(port))
	eventually(t, 10*time.Second, "the daemon names the listener's owner from its cache", func() string {
		if resp := d.who(t, port); resp.From != "cache" || !resp.Report.Holds(uint32(server.pid)) {
			return fmt.Sprintf("from the %s, held by %v", resp.From, resp.Report.PIDs())
		}
		return ""
	})
	res := d.history(t, port, start, time.Time{})
	if h := holders(res, server.pid); len(h) != 1 || !strings.HasSuffix(h[0], " holding") {
		t.Errorf("history right after: holders %q, want the listener, holding", h)
	}
	// The owner's start, on the wall clock: with the pid, it tells the
	// holder from a later process given the same pid.
	for _, h := range res.Holders {
		if started := time.Unix(0, h.Owner.StartNs); int(h.Owner.PID) == server.pid && (started.Before(start.Add(-time.Second)) || started.After(time.Now())) {
			t.Errorf("the holder started at %v, want after the test's start, %v", started, start)
		}
	}
}

// TestDaemonRestartKeepsHistory: a daemon stopped and started again keeps
// the history it had: a listener that closed, and one that still listens,
// continued as the same holder.
func TestDaemonRestartKeepsHistory(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	start := time.Now()
	d := startDaemon(t, dir)
	server := startHolder(t, "")
	held, closed := freeLoopbackPort(t), freeLoopbackPort(t)
	server.do("listen %s", loopback(held))
	server.do("listen %s", loopback(closed))
	server.do("close %s", loopback(closed))
	var before []string
	eventually(t, 10*time.Second, "the daemon records both listeners", func() string {
		h, c := holders(d.history(t, held, start, time.Time{}), server.pid), holders(d.history(t, closed, start, time.Time{}), server.pid)
		before = append(h, c...)
		if len(h) != 1 || !strings.HasSuffix(h[0], " holding") || len(c) != 1 || !strings.HasSuffix(c[0], " closed") {
			return fmt.Sprintf("holders %q and %q", h, c)
		}
		return ""
	})
	if _, err := d.stop(t, syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatalf("the daemon's exit: %v; stderr: %s", err, d.stderr.String())
	}

	again := startDaemon(t, dir)
	after := append(holders(again.history(t, held, start, time.Time{}), server.pid), holders(again.history(t, closed, start, time.Time{}), server.pid)...)
	if !slices.Equal(after, before) {
		t.Errorf("after a restart history has %q, before it had %q", after, before)
	}
}

// TestDaemonFullHistoryDisk: when the history's disk fills, the daemon
// says so once and goes on: who answers, history answers from what it
// wrote.
func TestDaemonFullHistoryDisk(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", data, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mounting a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(data, syscall.MNT_DETACH) })
	d := startDaemon(t, dir)
	server, binder := startHolder(t, ""), startHolder(t, "")
	port := freeLoopbackPort(t)
	server.do("listen %s", loopback(port))
	binder.do("fail-binds %s 200us", loopback(port))
	eventually(t, 90*time.Second, "history stops on the full disk", func() string {
		if !strings.Contains(d.stderr.String(), "history stopped") {
			return "its log: " + d.stderr.String()
		}
		return ""
	})
	time.Sleep(time.Second) // more failed binds, which must not be logged again
	if n := strings.Count(d.stderr.String(), "history stopped"); n != 1 || !strings.Contains(d.stderr.String(), "no space left on device") {
		t.Errorf("the log says %d times that history stopped, want once, naming the full disk: %s", n, d.stderr.String())
	}
	eventually(t, 10*time.Second, "who on the port", func() string { return d.agrees(t, port, "cache") })
	if res := d.history(t, port, time.Time{}, time.Time{}); len(res.FailedBinds) == 0 {
		t.Error("history answers nothing of what it wrote before the disk filled")
	}
	select {
	case err := <-d.exited:
		t.Fatalf("the daemon stopped: %v", err)
	default:
	}
}

// TestDaemonKilledKeepsHistory: a daemon killed with SIGKILL and started
// again has its history up to the last second before the kill.
func TestDaemonKilledKeepsHistory(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	d := startDaemon(t, dir)
	server, binder := startHolder(t, ""), startHolder(t, "")
	port := freeLoopbackPort(t)
	server.do("listen %s", loopback(port))
	started := time.Now()
	binder.do("fail-binds %s 5ms", loopback(port))
	time.Sleep(3 * time.Second)
	killed := time.Now()
	d.stop(t, syscall.SIGKILL, 5*time.Second)

	again := &daemonRun{socket: d.socket, dataDir: d.dataDir, exited: make(chan error, 1)}
	again.start(t)
	again.waitServing(t) // over the socket file the killed daemon left
	res := again.history(t, port, started, killed)
	var times []int64
	for _, f := range res.FailedBinds {
		if int(f.By.PID) == binder.pid {
			times = append(times, f.TimeNs)
		}
	}
	if len(times) == 0 {
		t.Fatalf("no failed bind kept of 3 s of them before the kill")
	}
	const lossBound = 1500 * time.Millisecond // the last second, and half a second for fsync on a busy machine
	first, last := time.Unix(0, times[0]), time.Unix(0, times[len(times)-1])
	t.Logf("%d failed binds kept, from %v after the first to %v before the kill", len(times), first.Sub(started), killed.Sub(last))
	if lost := killed.Sub(last); lost > lossBound {
		t.Errorf("the kill lost the last %v of history, more than %v", lost, lossBound)
	}
	if first.Sub(started) > lossBound {
		t.Errorf("history starts %v after the first failed bind", first.Sub(started))
	}
	for i := 1; i < len(times); i++ {
		if gap := time.Duration(times[i] - times[i-1]); gap > time.Second {
			t.Errorf("a gap of %v in history before the kill, at %v", gap, time.Unix(0, times[i]))
		}
	}
	if h := holders(again.history(t, port, started, time.Time{}), server.pid); len(h) != 1 || !strings.HasSuffix(h[0], " holding") {
		t.Errorf("the listener in history after the kill: %q, want %d holding", h, server.pid)
	}
}

// progIDs are the ids of the eBPF programs process pid holds.
func progIDs(t *testing.T, pid int) []ebpf.ProgramID {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ebpf.ProgramID
	for _, e := range entries {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target != "anon_inode:bpf-prog" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				id, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
				ids = append(ids, ebpf.ProgramID(id))
			}
		}
	}
	return ids
}

// TestDaemonStopsOnSIGTERM: SIGTERM stops the daemon (within a second;
// the test waits five, as a hang detector), with status 0, a last line
// counting what it lost, its socket removed and none of its programs left
// in the kernel.
func TestDaemonStopsOnSIGTERM(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, t.TempDir())
	ids := progIDs(t, d.cmd.Process.Pid)
	if len(ids) == 0 {
		t.Fatal("the daemon holds no eBPF program")
	}
	took, err := d.stop(t, syscall.SIGTERM, 5*time.Second)
	t.Logf("stopped %v after SIGTERM", took)
	if err != nil {
		t.Errorf("exit: %v; stderr: %s", err, d.stderr.String())
	}
	if _, err := os.Stat(d.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the daemon left its socket: %v", err)
	}
	if !regexp.MustCompile(`porttrace: stopped; in all, \d+ events lost \(\d+ ring full, \d+ runs skipped, \d+ undecodable\)\n$`).MatchString(d.stderr.String()) {
		t.Errorf("the daemon's last line does not count what it lost: %s", d.stderr.String())
	}
	// Programs are freed after an RCU grace period.
	eventually(t, 5*time.Second, "the daemon's programs unloaded", func() string {
		var left []ebpf.ProgramID
		for _, id := range ids {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				left = append(left, id)
			}
		}
		if len(left) > 0 {
			return fmt.Sprintf("programs %v still loaded", left)
		}
		return ""
	})
}

// TestDaemonReopensLog: after logrotate moves the log away, SIGHUP makes
// the daemon write its next lines to a new file at the same path.
func TestDaemonReopensLog(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "daemon.log")
	d := startDaemon(t, dir, "--log-file", logFile)
	read := func(path string) string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
	eventually(t, 5*time.Second, "the log says the daemon serves", func() string {
		if !strings.Contains(read(logFile), "serving the API on") {
			return fmt.Sprintf("the log: %q", read(logFile))
		}
		return ""
	})
	if err := os.Rename(logFile, logFile+".1"); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "a new log", func() string {
		if !strings.Contains(read(logFile), "reopened the log") {
			return fmt.Sprintf("%s holds %q", logFile, read(logFile))
		}
		return ""
	})
	if _, err := d.stop(t, syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if !strings.Contains(read(logFile), "stopped") || strings.Contains(read(logFile+".1"), "stopped") {
		t.Errorf("the last line went to the old log: new %q, old %q", read(logFile), read(logFile+".1"))
	}
}

// TestDaemonDeclinesBusyPort: past the 256 connections it looks up one by
// one, the daemon declines to answer who (it would walk every TCP socket
// as a snapshot does, then send them all), and who takes its own snapshot
// quickly, still naming, through the daemon, the owner of the TIME_WAIT
// sockets no process holds.
func TestDaemonDeclinesBusyPort(t *testing.T) {
	needRoot(t)
	d := startDaemon(t, t.TempDir())
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	accepted := map[string]net.Conn{}
	var clients []net.Conn
	for range 300 {
		c, s := connectTo(t, l)
		clients = append(clients, c)
		accepted[s.RemoteAddr().String()] = s
	}
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
		for _, s := range accepted {
			s.Close()
		}
	})
	// Three connections the client closes first: its ends go to TIME_WAIT.
	for _, c := range clients[:3] {
		c.Close()
		accepted[c.LocalAddr().String()].Close()
	}
	eventually(t, 10*time.Second, "the daemon declining the port", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := api.Who(ctx, d.socket, uint16(port))
		if err == nil || !strings.Contains(err.Error(), "a snapshot answers sooner") {
			return fmt.Sprintf("the daemon answered: %v", err)
		}
		return ""
	})

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_ARGS=who --json --verbose --socket "+d.socket+" "+strconv.Itoa(port))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !strings.Contains(stderr.String(), "a snapshot answers sooner): taking a snapshot now") {
		t.Fatalf("porttrace who: %v; stderr: %s", err, stderr.String())
	}
	var report struct {
		Sockets []struct {
			State string
			Seen  *struct{ PID int }
		}
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("porttrace who --json: %v: %s", err, out)
	}
	named, established := 0, 0
	for _, s := range report.Sockets {
		switch {
		case s.State == "TIME_WAIT" && s.Seen != nil && s.Seen.PID == os.Getpid():
			named++
		case s.State == "ESTABLISHED":
			established++
		}
	}
	if named != 3 || established != 2*297 {
		t.Errorf("%d TIME_WAIT sockets named as this test's (want 3), %d established (want %d)", named, established, 2*297)
	}
}
