package linux

import (
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// The network namespaces these tests make are a role's own
// (CLONE_NEWNET), not `ip netns`'s, so that they run where only busybox
// is (the kernels of make vmtest); cmd/porttrace tests the named ones.

// TestKernelWhoListenerInAnotherNamespace: a listener that exists only in
// another network namespace does not hold the port here (a bind here
// succeeds); asked about that namespace, or all of them, who names it,
// labelled with its namespace.
func TestKernelWhoListenerInAnotherNamespace(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	holder, ns := startRoleInNewNetNS(t, "hold", addr)
	holder.expect(t, "ready")
	pid := uint32(holder.cmd.Process.Pid)

	here, err := Who(port)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests' connections may leave TIME_WAIT sockets on any port:
	// only what a process holds, or a listener, counts.
	if here.Held() || slices.ContainsFunc(here.Sockets, func(s snapshot.PortSocket) bool { return s.State == tracer.StateListen }) {
		t.Errorf("here: a listener of another namespace holds the port: %+v", here.Sockets)
	}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("a bind here fails while only another namespace listens: %v", err)
	}
	l.Close()

	current, err := CurrentNamespace()
	if err != nil {
		t.Fatal(err)
	}
	// The daemon's question for the namespace of whoever asks it.
	if got, err := ProcessNamespace(os.Getpid(), current); err != nil || got != current {
		t.Errorf("ProcessNamespace(own pid) = %+v, %v; want %+v", got, err, current)
	}
	if got, err := ProcessNamespace(int(pid), current); err != nil || got.Inode != ns.Inode {
		t.Errorf("ProcessNamespace(holder) = %+v, %v; want inode %d", got, err, ns.Inode)
	}
	all, err := AllNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(all, func(n Namespace) bool { return n.Inode == ns.Inode }) {
		t.Fatalf("all namespaces %+v lack the holder's %d", all, ns.Inode)
	}
	for name, namespaces := range map[string][]Namespace{"--netns": {ns}, "--all-netns": all} {
		r, err := WhoIn(port, namespaces, proc.NewResolver())
		if err != nil {
			t.Fatal(err)
		}
		if !r.Held() || r.Processes[pid] == nil {
			t.Errorf("%s: not held by %d: %+v", name, pid, r.Sockets)
		}
		for _, s := range r.Sockets {
			if !s.Held() && s.State != tracer.StateListen {
				continue // another test's TIME_WAIT, say
			}
			if s.NetNS != ns.Inode || !slices.Equal(s.PIDs, []uint32{pid}) || s.State != tracer.StateListen {
				t.Errorf("%s: socket %+v, want only the listener of %d in %d", name, s, pid, ns.Inode)
			}
			if got := r.NamespaceLabel(s.NetNS); got != ns.Label() || got == "" || ns.Inode == current.Inode {
				t.Errorf("%s: labelled %q, want %q", name, got, ns.Label())
			}
		}
	}
}

// TestKernelWhoTimeWaitPerNamespace: the same 4-tuple in TIME_WAIT here and
// in another namespace are two sockets with two owners, and a watch that
// saw both names each in its own namespace.
func TestKernelWhoTimeWaitPerNamespace(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	clientPort := freePort(t, "127.0.0.1")
	for clientPort == port {
		clientPort = freePort(t, "127.0.0.1")
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	from := "PORTTRACE_TEST_LOCAL=" + net.JoinHostPort("127.0.0.1", strconv.Itoa(int(clientPort)))
	who := watchServingAPI(t, port)

	// Here: a server's acceptor child closes first.
	server := startRole(t, "server", addr, serverFirst)
	acceptor := server.childPID(t)
	startRoleEnv(t, "client", addr, serverFirst, from).wait(t)
	server.wait(t)
	// There: one process connects to itself over the same 4-tuple.
	pair, ns := startRoleInNewNetNS(t, "timewait", addr, from)
	pair.expect(t, "ready")
	other := uint32(pair.cmd.Process.Pid)

	current, err := CurrentNamespace()
	if err != nil {
		t.Fatal(err)
	}
	tuple := [2]netip.AddrPort{netip.MustParseAddrPort(addr), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), clientPort)}
	// owners maps the namespaces of the TIME_WAIT sockets on the tuple to
	// the owners named for them, 0 for none yet.
	owners := func(namespaces []Namespace) map[uint32]uint32 {
		t.Helper()
		r := who(namespaces...)
		got := map[uint32]uint32{}
		for _, s := range r.Sockets {
			if s.State != tracer.StateTimeWait || [2]netip.AddrPort{s.Local, s.Remote} != tuple {
				continue
			}
			if s.NetNS != current.Inode && r.NamespaceLabel(s.NetNS) != ns.Label() {
				t.Errorf("TIME_WAIT socket of %d labelled %q, want %q", s.NetNS, r.NamespaceLabel(s.NetNS), ns.Label())
			}
			got[s.NetNS] = 0
			if s.Seen != nil {
				got[s.NetNS] = s.Seen.PID
			}
		}
		return got
	}
	for _, c := range []struct {
		name       string
		namespaces []Namespace
		want       map[uint32]uint32
	}{
		{"here", []Namespace{current}, map[uint32]uint32{current.Inode: acceptor}},
		{"--netns", []Namespace{ns}, map[uint32]uint32{ns.Inode: other}},
		{"--all-netns", []Namespace{current, ns}, map[uint32]uint32{current.Inode: acceptor, ns.Inode: other}},
	} {
		// The watch publishes what it saw when it has read the events:
		// ask until it names an owner for every socket.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			got := owners(c.namespaces)
			if len(got) == len(c.want) && !slices.Contains(slices.Collect(maps.Values(got)), 0) {
				for netns, pid := range c.want {
					if got[netns] != pid {
						t.Errorf("%s: TIME_WAIT owners by namespace %v, want %v (here %d, there %d)", c.name, got, c.want, current.Inode, ns.Inode)
						break
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: TIME_WAIT owners by namespace %v after 10s, want %v", c.name, got, c.want)
			}
		}
	}
}

// TestFindNamespaceNamesTheFix: a --netns that names nothing says what
// kind of thing porttrace took it for (a pid was told to see ip netns
// list).
func TestFindNamespaceNamesTheFix(t *testing.T) {
	for spec, want := range map[string]string{
		"4194305":            "(a pid: is process 4194305 running?)",
		"/nonexistent/ns":    "(want a namespace file such as /proc/PID/ns/net or /run/netns/NAME)",
		"porttrace-no-netns": "(see ip netns list)",
	} {
		if _, err := FindNamespace(spec); err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("--netns %s: %v, want it to end with %q", spec, err, want)
		}
	}
}
