package snapshot

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"

	"errors"
	"net/netip"
	"slices"
)

// TimerTimeWait is PortSocket.Timer of a timewait socket: the time left
// until the kernel frees it.
const TimerTimeWait = "timewait"

// PortSocket is one socket on a port, as a snapshot of the kernel shows it.
// The daemon sends them to who by the ten thousand on a busy port: their
// JSON leaves zero fields out, which halves it.
type PortSocket struct {
	Proto  tracer.Proto   `json:",omitzero"`
	Family tracer.Family  `json:",omitzero"`
	State  tracer.State   `json:",omitzero"`
	Local  netip.AddrPort `json:",omitzero"`
	Remote netip.AddrPort `json:",omitzero"`
	// V6Only is IPV6_V6ONLY: an IPv6 wildcard socket that takes no IPv4.
	V6Only bool `json:",omitzero"`
	// Reuse is what the socket set of SO_REUSEADDR and SO_REUSEPORT.
	Reuse Reuse `json:",omitzero"`
	// NetNS is the network namespace's inode number (0 where none).
	NetNS uint32 `json:",omitzero"`
	// Timer is the kernel timer running on the socket, as ss names it
	// ("on" retransmit, "keepalive", "timewait", "persist"), "" if none;
	// TimerNs is the time left on it.
	Timer   string `json:",omitzero"`
	TimerNs int64  `json:",omitzero"`
	// RecvQ and SendQ are as ss shows them: for a listener, the accept
	// queue and its limit; for a connection, bytes not yet read by the
	// process and bytes not yet acknowledged by the peer.
	RecvQ, SendQ uint32 `json:",omitzero"`
	// UID owns the socket (its creator's effective uid).
	UID uint32 `json:",omitzero"`
	// Interface is the index of the interface the socket is bound to, 0
	// if none (the scope of a link-local address).
	Interface uint32 `json:",omitzero"`
	// Inode identifies the socket in the kernel's socket tables (0 for a
	// timewait socket, which no file refers to).
	Inode uint64 `json:",omitzero"`
	// Sock is the socket's identity in the tracer's events, 0 if unknown.
	Sock tracer.SockID `json:",omitzero"`
	// Subflow is an MPTCP socket's first TCP subflow: the socket the
	// tracer's state events name for it (0 if unknown or not MPTCP).
	Subflow tracer.SockID `json:",omitzero"`
	// PIDs are the processes holding the socket open: several after a
	// fork, or when a descriptor was passed on; FDs[i] is PIDs[i]'s
	// descriptor for it.
	PIDs []uint32 `json:",omitzero"`
	FDs  []int32  `json:",omitzero"`
	// Hidden says a process holds the socket but the caller may not see
	// which: another user's, for a caller without privileges.
	Hidden bool `json:",omitzero"`
	// Seen is the owner porttrace saw for a socket no process holds any
	// more (TIME_WAIT), if it saw the connection.
	Seen *proc.Process `json:",omitzero"`
	// Role is which end of its connection a connected TCP or MPTCP socket
	// is, as MarkRoles tells it. For a watch starting from the snapshot,
	// not part of the API's answers.
	Role tracer.Role `json:"-"`
}

// Reuse is what a socket set of SO_REUSEADDR and SO_REUSEPORT, with the
// uid that owns it (SO_REUSEPORT groups form within one effective uid).
// Known is false where the snapshot could not read them.
type Reuse struct {
	Known bool   `json:",omitzero"`
	Addr  bool   `json:",omitzero"`
	Port  bool   `json:",omitzero"`
	UID   uint32 `json:",omitzero"`
}

// PortReport answers "who owns this port?".
type PortReport struct {
	Port      uint16
	Sockets   []PortSocket
	Processes map[uint32]*proc.Process
	// StartNs is each holder's start time as the kernel keeps it, where
	// the snapshot read it there (Processes' is /proc's, cut to a clock
	// tick): what a watch started from the report knows the holder by,
	// as the tracer's events name it. Not part of the API's answers.
	StartNs map[uint32]uint64 `json:"-"`
	// Notes say what the report could not cover on this system.
	Notes []string
	// Elsewhere labels the network namespaces the report covers other
	// than the caller's own, by inode: their sockets are marked.
	Elsewhere map[uint32]string
}

// NamespaceLabel names a socket's network namespace when it is not the
// caller's own, "" when it is.
func (r *PortReport) NamespaceLabel(netns uint32) string { return r.Elsewhere[netns] }

// Serves says whether the socket is on the port's serving side: its local
// end is the port (a listener, a bound or UDP socket, an accepted
// connection). The other side connects to the port from this host.
func (r *PortReport) Serves(s *PortSocket) bool { return s.Local.Port() == r.Port }

// KeepFamily drops the sockets that carry no traffic of family f (see
// tracer.Family.Carries); family 0 keeps them all.
func (r *PortReport) KeepFamily(f tracer.Family) {
	r.Sockets = slices.DeleteFunc(r.Sockets, func(s PortSocket) bool {
		return !f.Carries(s.Local.Addr(), s.Remote.Addr(), s.V6Only)
	})
}

// MarkRoles names the client and server ends of the report's connections,
// which neither the kernel's tables nor ss keep: an end a listener of its
// network namespace takes connections to (its address and port) is the
// server's; else one connected to such a listener (a connection between
// two local processes), or whose local port is in ephemeral, the range
// the kernel picks a connect's port from, is the client's. Others stay
// unknown: a server's connection that outlived its listener is not taken
// for a client.
func (r *PortReport) MarkRoles(ephemeral PortRange) {
	type portKey struct {
		netns uint32
		port  uint16
	}
	listeners := map[portKey][]*PortSocket{}
	for i := range r.Sockets {
		if s := &r.Sockets[i]; s.State == tracer.StateListen {
			k := portKey{s.NetNS, s.Local.Port()}
			listeners[k] = append(listeners[k], s)
		}
	}
	listening := func(netns uint32, end netip.AddrPort) bool {
		return slices.ContainsFunc(listeners[portKey{netns, end.Port()}], func(l *PortSocket) bool { return l.takes(end.Addr()) })
	}
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if s.Proto == tracer.ProtoUDP || s.State == tracer.StateListen || s.Remote.Port() == 0 {
			continue
		}
		switch {
		case listening(s.NetNS, s.Local):
			s.Role = tracer.RoleServer
		case listening(s.NetNS, s.Remote) || ephemeral.Contains(s.Local.Port()):
			s.Role = tracer.RoleClient
		}
	}
}

// takes says listener l takes connections to addr: bound to it, or to
// the wildcard of its family (an IPv6 one, unless IPV6_V6ONLY, IPv4's
// too).
func (l *PortSocket) takes(addr netip.Addr) bool {
	bound, addr := l.Local.Addr().Unmap(), addr.Unmap()
	switch {
	case bound == addr:
		return true
	case !bound.IsUnspecified():
		return false
	case bound.Is4():
		return addr.Is4()
	}
	return addr.Is6() || !l.V6Only
}

// PortRange is a range of ports, both ends included.
type PortRange struct{ Low, High uint16 }

func (pr PortRange) Contains(port uint16) bool { return pr.Low <= port && port <= pr.High }

// LocalConnections is a copy of the report with the connections both of
// whose ends it has: connections between two local processes (of one
// namespace).
func (r *PortReport) LocalConnections() *PortReport {
	ends := map[SocketKey]bool{}
	for i := range r.Sockets {
		if s := &r.Sockets[i]; s.Connected() {
			ends[KeyOf(s.NetNS, s.Local, s.Remote)] = true
		}
	}
	local := *r
	local.Sockets = nil
	for _, s := range r.Sockets {
		if s.Connected() && ends[KeyOf(s.NetNS, s.Remote, s.Local)] {
			local.Sockets = append(local.Sockets, s)
		}
	}
	return &local
}

// KeepPorts keeps the sockets with an end on one of ports: a snapshot of
// every port cut to the ports a watch asked for.
func (r *PortReport) KeepPorts(ports tracer.Ports) {
	r.Sockets = slices.DeleteFunc(r.Sockets, func(s PortSocket) bool {
		return !ports.Contains(s.Local.Port()) && !ports.Contains(s.Remote.Port())
	})
}

// Held reports whether any process holds a socket that serves on the port:
// a client connected to the port does not hold it.
func (r *PortReport) Held() bool {
	return slices.ContainsFunc(r.Sockets, func(s PortSocket) bool { return s.Held() && r.Serves(&s) })
}

// Holds reports whether pid holds any socket of the report.
func (r *PortReport) Holds(pid uint32) bool {
	return slices.ContainsFunc(r.Sockets, func(s PortSocket) bool { return slices.Contains(s.PIDs, pid) })
}

// Scope says what a local address admits and who can reach it: the
// question behind most "why can't I connect?" and "why can't I bind?"
// puzzles. A link-local address keeps its zone (fe80::1%eth0).
func Scope(addr netip.Addr, v6only bool) string {
	a := addr.Unmap()
	switch {
	case a.Is4() && a.IsUnspecified():
		return "every IPv4 address: reachable from other hosts"
	case a.IsUnspecified() && v6only:
		return "every IPv6 address, no IPv4 (IPV6_V6ONLY): reachable from other hosts"
	case a.IsUnspecified():
		return "every IPv6 address and every IPv4 address: reachable from other hosts"
	case a == netip.AddrFrom4([4]byte{127, 0, 0, 1}):
		return "127.0.0.1 only: this host; not 127.11.22.33 nor ::1 (localhost may resolve to ::1 first)"
	case a.Is4() && a.IsLoopback():
		return a.String() + " only: this host; all of 127/8 is loopback, but each address is its own (not 127.0.0.1)"
	case a.IsLoopback():
		return "::1 only: this host; not 127.0.0.1 (localhost resolves here first on many systems)"
	case a.IsLinkLocalUnicast() && a.Zone() != "":
		return a.String() + " only: reachable from the link " + a.Zone() + " only"
	case a.IsLinkLocalUnicast():
		return a.String() + " only: reachable from its link only"
	case a.IsPrivate():
		return a.String() + " only: reachable from the network on its interface (a private address)"
	}
	return a.String() + " only: reachable from the network on its interface"
}

// Held reports whether a process holds the socket, seen or not.
func (s *PortSocket) Held() bool { return len(s.PIDs) > 0 || s.Hidden }

// Connected reports whether a socket is a connection rather than something
// that holds the port open for others (a listener, a bound or UDP socket).
func (s *PortSocket) Connected() bool {
	if s.Proto == tracer.ProtoUDP {
		return false
	}
	return s.State != tracer.StateListen && s.State != tracer.StateClose
}

// PIDs lists the processes holding sockets on the port, in order.
func (r *PortReport) PIDs() []uint32 {
	var pids []uint32
	for _, s := range r.Sockets {
		for _, pid := range s.PIDs {
			if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// SocketKey identifies a connection by its namespace and both ends, with
// IPv4-mapped addresses unmapped, so that what a snapshot lists and what
// a tracer remembers meet whatever family the socket was.
type SocketKey struct {
	NetNS         uint32
	Local, Remote netip.AddrPort
}

// KeyOf makes the SocketKey of a socket.
func KeyOf(netns uint32, local, remote netip.AddrPort) SocketKey {
	return SocketKey{
		NetNS:  netns,
		Local:  netip.AddrPortFrom(local.Addr().Unmap(), local.Port()),
		Remote: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()),
	}
}

// NameSeen names, for the sockets no process holds, the owners a running
// porttrace saw. A pid is no identity: identify says which process a pid
// names now (proc.ErrExited where none), and an owner it no longer names
// is marked Exited, so that no one takes the pid for the program that may
// hold it now. An owner without a start time (a platform that does not
// say) cannot be checked, and is left as the tracer said.
func (r *PortReport) NameSeen(seen map[SocketKey]proc.Process, identify func(pid uint32) (proc.Identity, error)) {
	for i := range r.Sockets {
		s := &r.Sockets[i]
		p, ok := seen[KeyOf(s.NetNS, s.Local, s.Remote)]
		if !ok || s.Held() || p.PID == 0 {
			continue
		}
		if !p.Exited && p.StartNs != 0 {
			now, err := identify(p.PID)
			p.Exited = errors.Is(err, proc.ErrExited) || err == nil && !now.Same(p.Identity)
		}
		s.Seen = &p
	}
}
