package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// TestMain lets a test ask a server from another process (as another
// user): PORTTRACE_TEST_ASK holds the socket's path.
func TestMain(m *testing.M) {
	if path := os.Getenv("PORTTRACE_TEST_ASK"); path != "" {
		_, err := Ask(context.Background(), path, 8080, false)
		fmt.Println(err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// seeded is a loop that knows one listener on 8080, owned by pid 100.
func seeded() *correlate.Loop {
	loop := correlate.NewLoop()
	loop.Seed(&snapshot.PortReport{
		Port: 8080,
		Sockets: []snapshot.PortSocket{{
			Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, NetNS: 1, Sock: 0x1000,
			Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("0.0.0.0:0"), PIDs: []uint32{100},
		}},
		Processes: map[uint32]*proc.Process{100: {Identity: proc.Identity{PID: 100, StartNs: 5_000_000_000}, Name: "server", Cgroup: proc.Cgroup{ID: 42}}},
	}, 1)
	return loop
}

// testServer serves loop (nil: a seeded one) on a socket in a fresh
// folder, to this process's group (so that the tests need not run as
// root), through listener wrap.
func testServer(t *testing.T, wrap func(net.Listener) net.Listener, loop *correlate.Loop) *Server {
	t.Helper()
	if loop == nil {
		loop = seeded()
	}
	// The loop takes its snapshots, as Run would, and publishes them.
	loop.Tick(10)
	path := filepath.Join(t.TempDir(), "test.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := serve(wrap(ln), path, peerRule{gid: os.Getgid()}, watchBackend(loop))
	t.Cleanup(func() { s.Close() })
	return s
}

func noWrap(ln net.Listener) net.Listener { return ln }

func ask(t *testing.T, s *Server) *OwnersResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := Ask(ctx, s.Path(), 8080, false)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestOwners(t *testing.T) {
	resp := ask(t, testServer(t, noWrap, nil))
	want := Socket{Proto: "tcp", Family: "ipv4", State: "LISTEN", NetNS: 1, Local: netip.MustParseAddrPort("127.0.0.1:8080"),
		Remote: netip.MustParseAddrPort("0.0.0.0:0"), PID: 100, Comm: "server", StartNs: 5_000_000_000, CgroupID: 42, OwnerVia: "snapshot"}
	if resp.Port != 8080 || len(resp.Sockets) != 1 || resp.Sockets[0] != want {
		t.Errorf("got %+v, want port 8080 and %+v", resp, want)
	}
}

// TestOwnersBothSides: a server answers for the sockets connected to the
// port from this host too (a client's connection, its TIME_WAIT after it
// exits), which who lists and asks running watches to name.
func TestOwnersBothSides(t *testing.T) {
	loop := seeded()
	loop.Seed(&snapshot.PortReport{
		Port: 8080,
		Sockets: []snapshot.PortSocket{{
			Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, NetNS: 1, Sock: 0x2000,
			Local: netip.MustParseAddrPort("127.0.0.1:40000"), Remote: netip.MustParseAddrPort("127.0.0.1:8080"), PIDs: []uint32{200},
		}},
		Processes: map[uint32]*proc.Process{200: {Identity: proc.Identity{PID: 200, StartNs: 6_000_000_000}, Name: "curl"}},
	}, 2)
	s := testServer(t, noWrap, loop)
	var clients []string
	for _, sock := range ask(t, s).Sockets {
		if sock.Remote.Port() == 8080 {
			clients = append(clients, fmt.Sprintf("%s %d %s", sock.Local, sock.PID, sock.Comm))
		}
	}
	if want := []string{"127.0.0.1:40000 200 curl"}; !slices.Equal(clients, want) {
		t.Errorf("the port's clients: %q, want %q", clients, want)
	}
}

// seededWithConnections is seeded's loop that also knows, of pid 100, an
// established connection and one closing in FIN_WAIT2 on 8080.
func seededWithConnections() *correlate.Loop {
	loop := seeded()
	loop.Seed(&snapshot.PortReport{
		Port: 8080,
		Sockets: []snapshot.PortSocket{
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, NetNS: 1, Sock: 0x2000,
				Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:40000"), PIDs: []uint32{100}},
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateFinWait2, NetNS: 1, Sock: 0x3000,
				Local: netip.MustParseAddrPort("127.0.0.1:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:40001"), PIDs: []uint32{100}},
		},
		Processes: map[uint32]*proc.Process{100: {Identity: proc.Identity{PID: 100, StartNs: 5_000_000_000}, Name: "server"}},
	}, 2)
	loop.Tick(10)
	return loop
}

// TestOwnersUnheldOnly: asked for the sockets no process may hold, a
// server leaves out a busy port's listeners and established connections,
// which who never asks it to name.
func TestOwnersUnheldOnly(t *testing.T) {
	s := testServer(t, noWrap, seededWithConnections())
	for unheld, want := range map[bool][]string{
		false: {"ESTABLISHED", "FIN_WAIT2", "LISTEN"},
		true:  {"FIN_WAIT2"},
	} {
		resp, err := Ask(t.Context(), s.Path(), 8080, unheld)
		if err != nil {
			t.Fatal(err)
		}
		var states []string
		for _, sock := range resp.Sockets {
			states = append(states, sock.State)
		}
		slices.Sort(states)
		if !slices.Equal(states, want) {
			t.Errorf("unheld only %v: %q, want %q", unheld, states, want)
		}
	}
}

// TestSeenKeepsIdentity: what a server says of an owner reaches who whole:
// its start time, cgroup and whether it has exited, keyed by the
// connection in its namespace.
func TestSeenKeepsIdentity(t *testing.T) {
	s := Socket{NetNS: 7, Local: netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080"), Remote: netip.MustParseAddrPort("127.0.0.1:40000"),
		PID: 100, Comm: "server", StartNs: 5_000_000_000, CgroupID: 42, Exited: true}
	got, ok := Seen([]Socket{s})[snapshot.KeyOf(7, netip.MustParseAddrPort("127.0.0.1:8080"), s.Remote)]
	want := proc.Process{Identity: proc.Identity{PID: 100, StartNs: 5_000_000_000}, Name: "server", Cgroup: proc.Cgroup{ID: 42}, Exited: true}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v (%v), want %+v", got, ok, want)
	}
}

func TestBadPort(t *testing.T) {
	s := testServer(t, noWrap, nil)
	for _, port := range []uint16{0} {
		if _, err := Ask(context.Background(), s.Path(), port, false); err == nil || !strings.Contains(err.Error(), "port must be a number from 1 to 65535") {
			t.Errorf("port %d: got %v", port, err)
		}
	}
}

// TestOversizedRequest: a request line of a megabyte is refused with 431
// after a few KiB are read, and the server goes on answering.
func TestOversizedRequest(t *testing.T) {
	s := testServer(t, noWrap, nil)
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go fmt.Fprintf(c, "GET %s?port=8080&pad=%s HTTP/1.1\r\nHost: x\r\n\r\n", ownersPath, strings.Repeat("x", 1<<20))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %s, want 431", resp.Status)
	}
	ask(t, s)
}

// TestSilentClient: a client that connects and says nothing neither blocks
// others nor holds its connection past the request timeout.
func TestSilentClient(t *testing.T) {
	s := testServer(t, noWrap, nil)
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask(t, s)
	c.SetReadDeadline(time.Now().Add(requestTimeout + 5*time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("silent connection: read %v, want EOF (closed by the server)", err)
	}
}

// failingListener fails its first accepts as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	failures int
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures > 0 {
		l.failures--
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptErrors: running out of file descriptors for a moment does not
// stop the server for good.
func TestAcceptErrors(t *testing.T) {
	s := testServer(t, func(ln net.Listener) net.Listener { return &failingListener{Listener: ln, failures: 3} }, nil)
	ask(t, s)
	if _, err := os.Stat(s.Path()); err != nil {
		t.Errorf("socket gone after accept errors: %v", err)
	}
}

// TestStaleSocket: a socket nobody answers on is replaced by a new server
// and removed by clients; one a live server answers on is left alone.
func TestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "watch-1.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := removeStale(stale); err != nil {
		t.Fatalf("a stale socket is not replaced: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale socket still there: %v", err)
	}

	live := testServer(t, noWrap, nil)
	if err := removeStale(live.Path()); err == nil || !strings.Contains(err.Error(), "another porttrace already serves") {
		t.Errorf("a live server's socket: got %v", err)
	}

	ln, err = net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	askAllIn(context.Background(), dir, 8080)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a client left a stale socket: %v", err)
	}
}

// TestAskAllSkipsStalledServer: a server that accepts and never answers
// costs the client its deadline, not more, and the others still count.
func TestAskAllSkipsStalledServer(t *testing.T) {
	dir := t.TempDir()
	stalled, err := net.Listen("unix", filepath.Join(dir, "stalled.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	ln, err := net.Listen("unix", filepath.Join(dir, "good.sock"))
	if err != nil {
		t.Fatal(err)
	}
	good := serve(ln, ln.Addr().String(), peerRule{gid: os.Getgid()}, watchBackend(seededWithConnections()))
	defer good.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if got := askAllIn(ctx, dir, 8080); len(got) != 1 || got[0].PID != 100 || got[0].State != "FIN_WAIT2" {
		t.Errorf("got %+v, want the good server's connection in FIN_WAIT2, the one socket of it no process may hold", got)
	}
}

// TestPeerRefused: even where the socket's mode lets anyone connect, a user
// who is neither root nor in the group porttrace is refused.
func TestPeerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI must run the privileged tests as root")
		}
		t.Skip("needs root")
	}
	dir, err := os.MkdirTemp("", "porttrace-api-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	s, err := Listen(filepath.Join(dir, "api.sock"), watchBackend(seeded()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	os.Chmod(s.Path(), 0o666) // as an umask of 0 and a careless mode would leave it
	bin := filepath.Join(dir, "api.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORTTRACE_TEST_ASK=" + s.Path()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "uid 65534 may not read socket owners") {
		t.Errorf("nobody's answer: %s", out)
	}
	ask(t, s) // root is served
}

// watchBackend serves only a loop's index, as a watch does.
func watchBackend(l *correlate.Loop) Backend { return Backend{Index: l.Index} }
