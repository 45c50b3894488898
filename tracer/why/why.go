// Package why answers "would bind() to ADDR:PORT succeed now, and if not,
// why?" from a snapshot of the port's sockets, by the kernel's own rules
// (a wildcard covers a specific address, a dual-stack [::] covers IPv4,
// SO_REUSEADDR against TIME_WAIT and bound sockets, SO_REUSEPORT groups
// within one effective uid), and turns the answer of a real trial bind
// into a verdict that names each blocker and what would unblock it.
//
// The rules are Linux's (net/ipv4/inet_connection_sock.c,
// inet_bind_conflict). The trial bind is the truth; the rules explain it.
package why

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Request is the bind(2) being asked about.
type Request struct {
	Port uint16
	// Addr is the local address; the zero Addr means 0.0.0.0.
	Addr netip.Addr
	UDP  bool
	// ReuseAddr and ReusePort are the options the new socket would set.
	ReuseAddr bool
	ReusePort bool
	// V6Only is IPV6_V6ONLY for an IPv6 address (the system's default is
	// net.ipv6.bindv6only).
	V6Only bool
	// UID is the effective uid of the process that would bind: SO_REUSEPORT
	// groups form only within one.
	UID uint32
}

// Address is the request's local address, 0.0.0.0 when none was given.
func (r Request) Address() netip.Addr {
	if !r.Addr.IsValid() {
		return netip.IPv4Unspecified()
	}
	return r.Addr
}

// System is what the kernel's settings in the request's network namespace
// say about the port.
type System struct {
	// UnprivilegedPortStart is net.ipv4.ip_unprivileged_port_start: binding
	// a lower port needs CAP_NET_BIND_SERVICE.
	UnprivilegedPortStart int
	// EphemeralLow and EphemeralHigh are net.ipv4.ip_local_port_range: the
	// ports outgoing connections take.
	EphemeralLow, EphemeralHigh int
	// Reserved says whether the port is in net.ipv4.ip_local_reserved_ports.
	Reserved bool
	// Notes are what the platform knows about the port that the fields
	// above cannot say, worded for the operator: Windows' excluded port
	// ranges and HTTP.sys (the windows package reads and words them).
	Notes []string
}

// Blocker is a socket that keeps the bind from succeeding.
type Blocker struct {
	Socket snapshot.PortSocket
	// Owner is who holds it (or, for a socket no process holds, who held
	// it, if a running porttrace saw it); nil if unknown.
	Owner *proc.Process
	// Reason says why the kernel refuses the bind because of it.
	Reason string
	// Unblock lists what would let the bind succeed, most direct first.
	Unblock []string
}

// Verdict answers a Request.
type Verdict struct {
	Request Request
	// Report is the snapshot of the port the verdict was made from.
	Report *snapshot.PortReport
	// Free says the trial bind succeeded.
	Free bool
	// Errno is the trial bind's error name ("EADDRINUSE"), empty if free.
	Errno string
	// Blockers are the sockets that explain a refusal.
	Blockers []Blocker
	// Sharing are sockets on the port the bind would coexist with
	// (SO_REUSEPORT groups, SO_REUSEADDR), when it is free.
	Sharing []snapshot.PortSocket
	// Notes are what else an operator should know about the port.
	Notes []string
}

// Judge makes the verdict: trial is the errno name of the trial bind ("" if
// it succeeded), report the port's sockets, sys the namespace's settings.
func Judge(req Request, report *snapshot.PortReport, sys System, trial string) Verdict {
	v := Verdict{Request: req, Report: report, Free: trial == "", Errno: trial}
	for i := range report.Sockets {
		s := &report.Sockets[i]
		if s.Local.Port() != req.Port || !sameProto(req, s) || !overlap(req, s) {
			continue
		}
		// Where the trial succeeded, a socket the rules would call a
		// blocker had the options that let the two share.
		if reason, unblock, conflict := conflicts(req, s); conflict && !v.Free {
			v.Blockers = append(v.Blockers, Blocker{Socket: *s, Owner: ownerOf(report, s), Reason: reason, Unblock: unblock})
		} else {
			v.Sharing = append(v.Sharing, *s)
		}
	}
	v.Blockers = sorted(v.Blockers)
	v.Notes = notes(req, sys, v)
	return v
}

// Blockers lists the sockets that would refuse bind(ADDR:PORT) by the
// rules alone, without a trial: who uses it for its headline.
func Blockers(req Request, report *snapshot.PortReport) []Blocker {
	var out []Blocker
	for _, s := range report.Sockets {
		if reason, unblock, conflict := conflicts(req, &s); conflict {
			out = append(out, Blocker{Socket: s, Owner: ownerOf(report, &s), Reason: reason, Unblock: unblock})
		}
	}
	return sorted(out)
}

func ownerOf(r *snapshot.PortReport, s *snapshot.PortSocket) *proc.Process {
	if len(s.PIDs) > 0 {
		return r.Processes[s.PIDs[0]]
	}
	return s.Seen
}

func sameProto(req Request, s *snapshot.PortSocket) bool {
	if req.UDP {
		return s.Proto == tracer.ProtoUDP
	}
	return s.Proto == tracer.ProtoTCP || s.Proto == tracer.ProtoMPTCP
}

// overlap says whether the request's address and the socket's local
// address can receive the same packets: equal, or one a wildcard covering
// the other (a dual-stack [::] covers every IPv4 address).
func overlap(req Request, s *snapshot.PortSocket) bool {
	a, b := req.Address(), s.Local.Addr()
	aV6, bV6 := a.Is6() && !a.Is4In6(), b.Is6() && !b.Is4In6()
	switch {
	case !aV6 && !bV6:
		a, b = a.Unmap(), b.Unmap()
		return a.IsUnspecified() || b.IsUnspecified() || a == b
	case aV6 && bV6:
		return a.IsUnspecified() || b.IsUnspecified() || a == b
	case aV6: // an IPv6 request against an IPv4 socket
		return a.IsUnspecified() && !req.V6Only
	default: // an IPv4 request against an IPv6 socket
		return b.IsUnspecified() && !s.V6Only
	}
}

// conflicts applies the kernel's rules to one socket that shares the port.
func conflicts(req Request, s *snapshot.PortSocket) (reason string, unblock []string, conflict bool) {
	if s.Local.Port() != req.Port || !sameProto(req, s) || !overlap(req, s) {
		return "", nil, false
	}
	covers := coverage(req, s)
	if req.UDP {
		if req.ReusePort && s.Reuse.Known && s.Reuse.Port && s.Reuse.UID == req.UID {
			return "", nil, false
		}
		if req.ReuseAddr && s.Reuse.Known && s.Reuse.Addr {
			return "", nil, false
		}
		return fmt.Sprintf("a UDP socket is bound to %s%s", tracer.Endpoint(s.Local), covers), stopOwner(s, "both sockets set SO_REUSEADDR, or SO_REUSEPORT under one user"), true
	}
	switch {
	case timeWaitLike(s):
		if req.ReuseAddr && s.Reuse.Known && s.Reuse.Addr {
			return "", nil, false
		}
		left := ""
		if s.TimerNs > 0 {
			left = fmt.Sprintf(" for %s more", time.Duration(s.TimerNs).Round(time.Second))
		}
		reason = fmt.Sprintf("connection %s -> %s is in %s%s, held by no process: the kernel keeps it%s", tracer.Endpoint(s.Local), tracer.Endpoint(s.Remote), s.State, left, covers)
		unblock = []string{
			waitFor(s),
			"set SO_REUSEADDR before bind() (it passes a TIME_WAIT socket whose connection also had it, as accepted connections of a listener with SO_REUSEADDR do)",
			fmt.Sprintf("porttrace free --time-wait %d", req.Port),
		}
		if !req.ReuseAddr {
			unblock[1] = "set SO_REUSEADDR before bind() (it passes a TIME_WAIT socket whose connection also had it, as accepted connections of a listener with SO_REUSEADDR do; try porttrace why --reuseaddr)"
		}
		return reason, unblock, true
	case s.State == tracer.StateListen:
		if req.ReusePort && s.Reuse.Known && s.Reuse.Port && s.Reuse.UID == req.UID {
			return "", nil, false
		}
		reason = fmt.Sprintf("a listener on %s%s", tracer.Endpoint(s.Local), covers)
		if s.Reuse.Known && s.Reuse.Port {
			return reason + " (with SO_REUSEPORT)", stopOwner(s, fmt.Sprintf("set SO_REUSEPORT and run as uid %d to join its group", s.Reuse.UID)), true
		}
		return reason, stopOwner(s, ""), true
	case s.State == tracer.StateClose:
		if req.ReuseAddr && s.Reuse.Known && s.Reuse.Addr {
			return "", nil, false
		}
		if req.ReusePort && s.Reuse.Known && s.Reuse.Port && s.Reuse.UID == req.UID {
			return "", nil, false
		}
		return fmt.Sprintf("a socket is bound to %s but not listening (ss -l shows it only from Linux 6.8, with -B)%s", tracer.Endpoint(s.Local), covers),
			stopOwner(s, "both sockets set SO_REUSEADDR"), true
	default:
		if req.ReuseAddr && s.Reuse.Known && s.Reuse.Addr {
			return "", nil, false
		}
		return fmt.Sprintf("connection %s -> %s (%s) holds the port%s", tracer.Endpoint(s.Local), tracer.Endpoint(s.Remote), s.State, covers),
			stopOwner(s, "set SO_REUSEADDR before bind() (it passes connections whose socket also had it)"), true
	}
}

// timeWaitLike is a connection no process holds: TIME_WAIT, or an orphan
// still closing.
func timeWaitLike(s *snapshot.PortSocket) bool {
	return !s.Held() && s.State != tracer.StateListen && s.State != tracer.StateClose
}

func waitFor(s *snapshot.PortSocket) string {
	if s.TimerNs > 0 {
		return fmt.Sprintf("wait %s: the kernel frees it then", time.Duration(s.TimerNs).Round(time.Second))
	}
	return "wait for the kernel to finish closing it (TIME_WAIT lasts 60 s)"
}

// coverage explains, in parentheses, an overlap that is not equality.
func coverage(req Request, s *snapshot.PortSocket) string {
	a, b := req.Address(), s.Local.Addr()
	aV6, bV6 := a.Is6() && !a.Is4In6(), b.Is6() && !b.Is4In6()
	switch {
	case a.Unmap() == b.Unmap():
		return ""
	case bV6 && !aV6:
		return fmt.Sprintf(" (%s without IPV6_V6ONLY covers every IPv4 address, %s too)", b, a)
	case aV6 && !bV6:
		return fmt.Sprintf(" (%s without IPV6_V6ONLY covers every IPv4 address, %s too)", a, b)
	case b.IsUnspecified():
		return fmt.Sprintf(" (%s covers %s)", b, a)
	case a.IsUnspecified():
		return fmt.Sprintf(" (%s covers %s)", a, b)
	}
	return ""
}

// stopOwner is what frees a socket a process holds: stop it (or its unit),
// or the option that lets the two share.
func stopOwner(s *snapshot.PortSocket, option string) []string {
	var out []string
	switch {
	case s.Held():
		out = append(out, fmt.Sprintf("stop the process holding it (porttrace free %d)", s.Local.Port()))
	default:
		out = append(out, waitFor(s))
	}
	if option != "" {
		out = append(out, option)
	}
	return out
}

func notes(req Request, sys System, v Verdict) []string {
	var out []string
	if int(req.Port) < sys.UnprivilegedPortStart {
		out = append(out, fmt.Sprintf("ports below %d need CAP_NET_BIND_SERVICE (root has it; net.ipv4.ip_unprivileged_port_start)", sys.UnprivilegedPortStart))
	}
	if int(req.Port) >= sys.EphemeralLow && int(req.Port) <= sys.EphemeralHigh {
		if sys.Reserved {
			out = append(out, fmt.Sprintf("port %d is in the ephemeral range %d-%d but reserved (net.ipv4.ip_local_reserved_ports): outgoing connections will not take it", req.Port, sys.EphemeralLow, sys.EphemeralHigh))
		} else {
			out = append(out, fmt.Sprintf("port %d is in the ephemeral range %d-%d: outgoing connections may take it at any time (add it to net.ipv4.ip_local_reserved_ports)", req.Port, sys.EphemeralLow, sys.EphemeralHigh))
		}
	}
	switch {
	case !v.Free && v.Errno == "EADDRINUSE" && len(v.Blockers) == 0:
		out = append(out, "the kernel refused the bind, but no socket porttrace can see explains it (a socket bound inside the kernel, or one that went away between the snapshot and the trial)")
	case !v.Free && v.Errno == "EADDRNOTAVAIL":
		out = append(out, fmt.Sprintf("%s is not an address of this host's interfaces in this network namespace", req.Address()))
	case !v.Free && v.Errno == "EACCES":
		out = append(out, "the kernel refused permission: a privileged port without CAP_NET_BIND_SERVICE, or a security policy")
	}
	return append(out, sys.Notes...)
}

// sorted orders blockers: processes before ownerless sockets, then by
// address; it keeps reports stable for the eye and for golden files.
func sorted(bs []Blocker) []Blocker {
	// Sorted by index, then copied once: a blocker is a few hundred bytes,
	// and a busy port has thousands.
	order := make([]int, len(bs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int {
		a, b := &bs[i].Socket, &bs[j].Socket
		if a.Held() != b.Held() {
			if a.Held() {
				return -1
			}
			return 1
		}
		return a.Local.Compare(b.Local)
	})
	out := make([]Blocker, len(bs))
	for i, j := range order {
		out[i] = bs[j]
	}
	return out
}
