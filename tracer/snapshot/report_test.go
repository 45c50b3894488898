package snapshot

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
)

// TestNameSeenChecksIdentity: a pid is no identity. A former owner is
// named as running only while its pid still names the process that
// started at its start time.
func TestNameSeenChecksIdentity(t *testing.T) {
	const port = 8080
	local := netip.MustParseAddrPort("127.0.0.1:8080")
	peer := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p) }
	const start = 5_000_000_000
	owner := func(pid uint32, startNs uint64) proc.Process {
		return proc.Process{Identity: proc.Identity{PID: pid, StartNs: startNs}, Name: "server"}
	}
	// Now: 100 runs, started in the same clock tick as seen (the kernel's
	// exact time against /proc's rounded one); 200's pid was taken by a
	// process started later; 300 is gone; 500 cannot be read.
	running := map[uint32]uint64{100: start - start%10_000_000, 200: start + 7e9}
	identify := func(pid uint32) (proc.Identity, error) {
		if pid == 500 {
			return proc.Identity{}, errors.New("permission denied")
		}
		if s, ok := running[pid]; ok {
			return proc.Identity{PID: pid, StartNs: s}, nil
		}
		return proc.Identity{}, proc.ErrExited
	}
	cases := []struct {
		name       string
		seen       proc.Process
		held       bool
		wantNamed  bool
		wantExited bool
	}{
		{"still running", owner(100, start+3_000_000), false, true, false},
		{"pid taken by another program", owner(200, start), false, true, true},
		{"gone", owner(300, start), false, true, true},
		{"start time unknown: cannot be checked", owner(200, 0), false, true, false},
		{"the tracer saw it exit", func() proc.Process { p := owner(100, start); p.Exited = true; return p }(), false, true, true},
		{"unreadable: not said to have exited", owner(500, start), false, true, false},
		{"held by a process: not a former owner's", owner(100, start), true, false, false},
	}
	r := &PortReport{Port: port}
	seen := map[SocketKey]proc.Process{}
	for i, c := range cases {
		s := PortSocket{Proto: tracer.ProtoTCP, State: tracer.StateTimeWait, Local: local, Remote: peer(uint16(40000 + i)), NetNS: 7}
		if c.held {
			s.State, s.PIDs = tracer.StateEstablished, []uint32{42}
		}
		r.Sockets = append(r.Sockets, s)
		seen[KeyOf(7, s.Local, s.Remote)] = c.seen
	}
	// The same connection in another namespace is another socket.
	r.Sockets = append(r.Sockets, PortSocket{Proto: tracer.ProtoTCP, State: tracer.StateTimeWait, Local: local, Remote: peer(40000), NetNS: 8})
	r.NameSeen(seen, identify)
	for i, c := range cases {
		got := r.Sockets[i].Seen
		switch {
		case got == nil && c.wantNamed:
			t.Errorf("%s: not named", c.name)
		case got != nil && !c.wantNamed:
			t.Errorf("%s: named %+v", c.name, got)
		case got != nil && (got.PID != c.seen.PID || got.Exited != c.wantExited):
			t.Errorf("%s: named %+v, want pid %d exited %v", c.name, got, c.seen.PID, c.wantExited)
		}
	}
	if s := r.Sockets[len(cases)]; s.Seen != nil {
		t.Errorf("a socket of another namespace took the owner %+v", s.Seen)
	}
}

// TestKeepPorts: a snapshot of every port, cut to a watch's ports, keeps
// the sockets with either end on one of them: a listener, a server end
// and a client end.
func TestKeepPorts(t *testing.T) {
	socket := func(local, remote string) PortSocket {
		return PortSocket{Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
	}
	r := &PortReport{Sockets: []PortSocket{
		socket("0.0.0.0:8080", "0.0.0.0:0"),
		socket("127.0.0.1:8080", "127.0.0.1:40000"),
		socket("127.0.0.1:40000", "127.0.0.1:8080"),
		socket("0.0.0.0:22", "0.0.0.0:0"),
		socket("10.0.0.1:22", "10.0.0.2:8080"), // a peer's port 8080 is this socket's remote end
		socket("127.0.0.1:9000", "127.0.0.1:41000"),
	}}
	r.KeepPorts(tracer.Ports{443, 8080})
	if len(r.Sockets) != 4 || r.Sockets[3].Local.Port() != 22 {
		t.Errorf("kept %+v, want the four sockets with an end on 8080", r.Sockets)
	}
}

// TestMarkRoles: a connection's end on a listening port is the server's;
// an end connected to a listening port, or on an ephemeral port nothing
// listens on, the client's; a server's connection that outlived its
// listener, on a port outside the ephemeral range, is left unknown, as
// are listeners and UDP sockets. Listeners count in their own namespace.
func TestMarkRoles(t *testing.T) {
	socket := func(proto tracer.Proto, state tracer.State, netns uint32, local, remote string) PortSocket {
		return PortSocket{Proto: proto, State: state, NetNS: netns, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
	}
	tcp, est := tracer.ProtoTCP, tracer.StateEstablished
	cases := []struct {
		socket PortSocket
		want   tracer.Role
	}{
		{socket(tcp, tracer.StateListen, 1, "0.0.0.0:8080", "0.0.0.0:0"), tracer.RoleUnknown},
		{socket(tracer.ProtoMPTCP, tracer.StateListen, 1, "[::]:9090", "[::]:0"), tracer.RoleUnknown},
		{socket(tcp, est, 1, "127.0.0.1:8080", "127.0.0.1:40000"), tracer.RoleServer},
		{socket(tcp, est, 1, "127.0.0.1:40000", "127.0.0.1:8080"), tracer.RoleClient},
		{socket(tracer.ProtoMPTCP, est, 1, "[::1]:9090", "[::1]:40001"), tracer.RoleServer},
		// A listener's port, below the ephemeral range, connected to.
		{socket(tcp, est, 1, "127.0.0.1:1500", "127.0.0.1:8080"), tracer.RoleClient},
		// To another machine, from an ephemeral port.
		{socket(tcp, tracer.StateTimeWait, 1, "10.0.0.1:50000", "10.0.0.2:443"), tracer.RoleClient},
		// Its listener closed: nothing says.
		{socket(tcp, est, 1, "10.0.0.1:7000", "10.0.0.2:50001"), tracer.RoleUnknown},
		// Port 8080 listens in namespace 1 only.
		{socket(tcp, est, 2, "10.0.0.1:8080", "10.0.0.2:7001"), tracer.RoleUnknown},
		// A listener on 127.0.0.2:7100 takes nothing for 127.0.0.1:7100:
		// this end, bound there, connected to 127.0.0.1:7101's listener.
		{socket(tcp, tracer.StateListen, 1, "127.0.0.2:7100", "0.0.0.0:0"), tracer.RoleUnknown},
		{socket(tcp, tracer.StateListen, 1, "127.0.0.1:7101", "0.0.0.0:0"), tracer.RoleUnknown},
		{socket(tcp, est, 1, "127.0.0.1:7100", "127.0.0.1:7101"), tracer.RoleClient},
		{socket(tcp, est, 1, "127.0.0.1:7101", "127.0.0.1:7100"), tracer.RoleServer},
		// The IPv4 peers of the dual-stack [::]:9090 above.
		{socket(tracer.ProtoMPTCP, est, 1, "[::ffff:127.0.0.1]:9090", "[::ffff:127.0.0.1]:40003"), tracer.RoleServer},
		{socket(tracer.ProtoUDP, est, 1, "127.0.0.1:40002", "127.0.0.1:53"), tracer.RoleUnknown},
	}
	r := &PortReport{}
	for _, c := range cases {
		r.Sockets = append(r.Sockets, c.socket)
	}
	r.MarkRoles(PortRange{Low: 32768, High: 60999})
	for i, c := range cases {
		if got := r.Sockets[i].Role; got != c.want {
			t.Errorf("%v %s > %s in netns %d: role %d, want %d", c.socket.State, c.socket.Local, c.socket.Remote, c.socket.NetNS, got, c.want)
		}
	}
}

// TestLocalConnections: the connections both of whose ends the report has,
// a dual-stack server end's mapped address matching its client's plain
// one, in the same namespace only; the report itself is left whole.
func TestLocalConnections(t *testing.T) {
	socket := func(state tracer.State, netns uint32, local, remote string) PortSocket {
		return PortSocket{Proto: tracer.ProtoTCP, State: state, NetNS: netns, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
	}
	r := &PortReport{Sockets: []PortSocket{
		socket(tracer.StateListen, 1, "[::]:8080", "[::]:0"),
		socket(tracer.StateEstablished, 1, "[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:40000"),
		socket(tracer.StateEstablished, 1, "127.0.0.1:40000", "127.0.0.1:8080"),
		socket(tracer.StateEstablished, 1, "10.0.0.1:8080", "10.0.0.2:40001"), // to another machine
		socket(tracer.StateEstablished, 2, "127.0.0.1:8080", "127.0.0.1:40002"),
		socket(tracer.StateEstablished, 3, "127.0.0.1:40002", "127.0.0.1:8080"), // the other namespace's
	}}
	local := r.LocalConnections()
	if len(local.Sockets) != 2 || local.Sockets[0].Local.Port() != 8080 || local.Sockets[1].Local.Port() != 40000 {
		t.Errorf("local connections %+v, want the two ends of 40000 -> 8080", local.Sockets)
	}
	if len(r.Sockets) != 6 {
		t.Errorf("the report kept %d of its 6 sockets", len(r.Sockets))
	}
}
