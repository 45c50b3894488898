package snapshot

import (
	"github.com/porttrace/porttrace/tracer"

	"net/netip"
	"slices"
)

// PortSocket is one socket on a port, as a snapshot of the kernel shows it.
type PortSocket struct {
	Proto  tracer.Proto
	Family tracer.Family
	State  tracer.State
	Local  netip.AddrPort
	Remote netip.AddrPort
	// V6Only is IPV6_V6ONLY: an IPv6 wildcard socket that takes no IPv4.
	V6Only bool
	// NetNS is the network namespace's inode number (0 where none).
	NetNS uint32
	// TimerNs is the time left on a timewait socket's timer.
	TimerNs int64
	// Inode identifies the socket in the kernel's socket tables (0 for a
	// timewait socket, which no file refers to).
	Inode uint64
	// Sock is the socket's identity in the tracer's events, 0 if unknown.
	Sock tracer.SockID
	// PIDs are the processes holding the socket open: several after a
	// fork, or when a descriptor was passed on.
	PIDs []uint32
	// Seen is the owner porttrace saw for a socket no process holds any
	// more (TIME_WAIT), if it saw the connection.
	Seen *Process
}

// Process describes a process holding a socket.
type Process struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	// StartNs is when the process started (see tracer.Process): with the
	// pid, it tells the process from a later one given the same pid.
	StartNs uint64 `json:"start_ns,omitempty"`
	// CgroupID is the process's cgroup v2 id.
	CgroupID uint64 `json:"cgroup_id,omitempty"`
	User     string `json:"user,omitempty"`
	Exe      string `json:"exe,omitempty"`
	Cmdline  string `json:"cmdline,omitempty"`
}

// PortReport answers "who owns this port?".
type PortReport struct {
	Port      uint16
	Sockets   []PortSocket
	Processes map[uint32]*Process
	// Notes say what the report could not cover on this system.
	Notes []string
}

// KeepFamily drops the sockets that carry no traffic of family f (see
// tracer.Family.Carries); family 0 keeps them all.
func (r *PortReport) KeepFamily(f tracer.Family) {
	r.Sockets = slices.DeleteFunc(r.Sockets, func(s PortSocket) bool {
		return !f.Carries(s.Local.Addr(), s.Remote.Addr(), s.V6Only)
	})
}

// Held reports whether any process holds a socket on the port.
func (r *PortReport) Held() bool {
	return slices.ContainsFunc(r.Sockets, func(s PortSocket) bool { return len(s.PIDs) > 0 })
}

// Scope says what a local address admits, the question behind most "why
// can't I bind?" puzzles.
func Scope(addr netip.Addr, v6only bool) string {
	switch {
	case addr.Is4() && addr.IsUnspecified():
		return "every IPv4 address"
	case addr.IsUnspecified() && v6only:
		return "every IPv6 address (IPV6_V6ONLY: no IPv4)"
	case addr.IsUnspecified():
		return "every IPv6 address, and IPv4 too"
	case addr.Unmap().IsLoopback():
		return "loopback only"
	}
	return "this address only"
}

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
// porttrace saw.
func (r *PortReport) NameSeen(seen map[SocketKey]Process) {
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if p, ok := seen[KeyOf(s.NetNS, s.Local, s.Remote)]; ok && len(s.PIDs) == 0 && p.PID != 0 {
			s.Seen = &p
		}
	}
}
