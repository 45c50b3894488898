package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
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
	})
}

// waitServing returns once the daemon answers on its socket.
func (d *daemonRun) waitServing(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(daemonStartTimeout); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.Ask(ctx, d.socket, 1)
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
		// bind(2) to addr, held by another socket, every few
		// milliseconds, until stdin closes: failed binds for history.
		go func() {
			for {
				if l, err := lc.Listen(context.Background(), network, addr); err == nil {
					l.Close()
				}
				time.Sleep(5 * time.Millisecond)
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
// (from a walk); a TIME_WAIT owner the daemon names equal to the one the
// one-shot names.
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
		case answer.From == "cache" && len(s.PIDs) > 1:
			diffs = append(diffs, fmt.Sprintf("%s: the daemon's cache names %v, want one owner", k, s.PIDs))
		case answer.From == "walk" && !slices.Equal(slices.Sorted(slices.Values(s.PIDs)), slices.Sorted(slices.Values(o.PIDs))):
			diffs = append(diffs, fmt.Sprintf("%s (inode %d): the daemon's walk names %v, the one-shot %v", k, s.Inode, s.PIDs, o.PIDs))
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
	owners, err := api.Ask(ctx, d.socket, uint16(port))
	if err != nil {
		t.Fatal(err)
	}
	r.NameSeen(api.Seen(owners.Sockets))
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
}
