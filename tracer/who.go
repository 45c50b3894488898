package tracer

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// PortSocket is one socket on a port, as a snapshot of the kernel shows it.
type PortSocket struct {
	Proto  Proto
	Family Family
	State  State
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
	Sock SockID
	// PIDs are the processes holding the socket open: several after a
	// fork, or when a descriptor was passed on.
	PIDs []uint32
	// Seen is the owner porttrace saw for a socket no process holds any
	// more (TIME_WAIT), if it saw the connection.
	Seen *Process
}

// Process describes a process holding a socket.
type Process struct {
	PID     uint32 `json:"pid"`
	Comm    string `json:"comm"`
	User    string `json:"user,omitempty"`
	Exe     string `json:"exe,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// PortReport answers "who owns this port?".
type PortReport struct {
	Port      uint16
	Sockets   []PortSocket
	Processes map[uint32]*Process
	// Notes say what the report could not cover on this system.
	Notes []string
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

// connected reports whether a socket is a connection rather than something
// that holds the port open for others (a listener, a bound or UDP socket).
func (s *PortSocket) connected() bool {
	if s.Proto == ProtoUDP {
		return false
	}
	return s.State != StateListen && s.State != StateClose
}

// WriteText writes the report for a person: each process with what it
// holds, listeners and bound sockets one per line, connections counted by
// state with a few peers; then the sockets no process holds.
func (r *PortReport) WriteText(w io.Writer) {
	pids := r.pids()
	defer func() {
		for _, n := range r.Notes {
			fmt.Fprintf(w, "\nnote: %s\n", n)
		}
	}()
	switch len(pids) {
	case 0:
		fmt.Fprintf(w, "port %d: no process holds it\n", r.Port)
	case 1:
		fmt.Fprintf(w, "port %d: held by 1 process\n", r.Port)
	default:
		fmt.Fprintf(w, "port %d: held by %d processes\n", r.Port, len(pids))
	}
	for _, pid := range pids {
		p := r.Processes[pid]
		fmt.Fprintf(w, "\n%-8d %-16s user %s  exe %s\n", p.PID, printable(p.Comm), orDash(p.User), orDash(printable(p.Exe)))
		if p.Cmdline != "" {
			fmt.Fprintf(w, "         cmdline: %s\n", printable(p.Cmdline))
		}
		var conns []PortSocket
		for _, s := range r.Sockets {
			if !slices.Contains(s.PIDs, pid) {
				continue
			}
			if s.connected() {
				conns = append(conns, s)
				continue
			}
			fmt.Fprintf(w, "         %-5s %-12s %-24s %s\n", s.Proto, socketState(&s), s.Local, Scope(s.Local.Addr(), s.V6Only))
		}
		writeConnections(w, conns)
	}
	var unheld []PortSocket
	for _, s := range r.Sockets {
		if len(s.PIDs) == 0 {
			unheld = append(unheld, s)
		}
	}
	if len(unheld) == 0 {
		return
	}
	fmt.Fprintf(w, "\nheld by no process:\n")
	for _, s := range unheld {
		line := fmt.Sprintf("         %-5s %-12s %s -> %s", s.Proto, s.State, s.Local, s.Remote)
		if s.TimerNs > 0 {
			line += fmt.Sprintf("  %.1fs left", time.Duration(s.TimerNs).Seconds())
		}
		if s.Seen != nil {
			line += fmt.Sprintf("  owner %d %s (seen by porttrace)", s.Seen.PID, printable(s.Seen.Comm))
		} else {
			line += "  owner unknown (closed before porttrace watched)"
		}
		fmt.Fprintln(w, line)
	}
}

// maxPeers is how many peers a connection summary names per state.
const maxPeers = 3

func writeConnections(w io.Writer, conns []PortSocket) {
	byState := map[State][]PortSocket{}
	var states []State
	for _, c := range conns {
		if _, ok := byState[c.State]; !ok {
			states = append(states, c.State)
		}
		byState[c.State] = append(byState[c.State], c)
	}
	slices.Sort(states)
	for _, st := range states {
		cs := byState[st]
		var peers []string
		for _, c := range cs[:min(len(cs), maxPeers)] {
			peers = append(peers, c.Remote.String())
		}
		more := ""
		if len(cs) > maxPeers {
			more = fmt.Sprintf(" and %d more", len(cs)-maxPeers)
		}
		noun := "connections"
		if len(cs) == 1 {
			noun = "connection"
		}
		fmt.Fprintf(w, "         %-5s %-12s %d %s: %s%s\n", cs[0].Proto, st, len(cs), noun, strings.Join(peers, ", "), more)
	}
}

// socketState names a socket's state; a UDP socket has none worth a name.
func socketState(s *PortSocket) string {
	if s.Proto == ProtoUDP {
		return "-"
	}
	return s.State.String()
}

// printable keeps what processes chose to call themselves from writing
// control sequences to the operator's terminal.
func printable(s string) string {
	return string(appendPrintable(nil, []byte(s)))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (r *PortReport) pids() []uint32 {
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

// jsonSocket and jsonReport are the JSON form of a report: a documented
// contract (README), like the watch's lines.
type jsonSocket struct {
	Proto      string   `json:"proto"`
	Family     string   `json:"family"`
	State      string   `json:"state"`
	Local      string   `json:"saddr"`
	LocalPort  uint16   `json:"sport"`
	Remote     string   `json:"daddr"`
	RemotePort uint16   `json:"dport"`
	Scope      string   `json:"scope,omitempty"`
	V6Only     bool     `json:"v6only,omitempty"`
	NetNS      uint32   `json:"netns"`
	TimerNs    int64    `json:"timer_ns,omitempty"`
	PIDs       []uint32 `json:"pids"`
	Seen       *Process `json:"seen,omitempty"`
}

type jsonReport struct {
	Port      uint16       `json:"port"`
	Held      bool         `json:"held"`
	Processes []*Process   `json:"processes"`
	Sockets   []jsonSocket `json:"sockets"`
	Notes     []string     `json:"notes,omitempty"`
}

// WriteJSON writes the report as one JSON object on one line.
func (r *PortReport) WriteJSON(w io.Writer) error {
	out := jsonReport{Port: r.Port, Held: r.Held(), Processes: []*Process{}, Sockets: []jsonSocket{}, Notes: r.Notes}
	for _, pid := range r.pids() {
		out.Processes = append(out.Processes, r.Processes[pid])
	}
	for _, s := range r.Sockets {
		js := jsonSocket{
			Proto: s.Proto.String(), Family: s.Family.String(), State: socketState(&s),
			Local: s.Local.Addr().String(), LocalPort: s.Local.Port(),
			Remote: s.Remote.Addr().String(), RemotePort: s.Remote.Port(),
			V6Only: s.V6Only, NetNS: s.NetNS, TimerNs: s.TimerNs, PIDs: s.PIDs, Seen: s.Seen,
		}
		if js.PIDs == nil {
			js.PIDs = []uint32{}
		}
		if !s.connected() {
			js.Scope = Scope(s.Local.Addr(), s.V6Only)
		}
		out.Sockets = append(out.Sockets, js)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
