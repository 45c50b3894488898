package render

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// WhoText writes the report for a person: each process with what it
// holds, listeners and bound sockets one per line, connections counted by
// state with a few peers; then the sockets no process holds.
func WhoText(w io.Writer, r *snapshot.PortReport) {
	pids := r.PIDs()
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
		fmt.Fprintf(w, "\n%-8d %-16s user %s  exe %s\n", p.PID, tracer.Printable(p.Comm), orDash(p.User), orDash(tracer.Printable(p.Exe)))
		if p.Cmdline != "" {
			fmt.Fprintf(w, "         cmdline: %s\n", tracer.Printable(p.Cmdline))
		}
		var conns []snapshot.PortSocket
		for _, s := range r.Sockets {
			if !slices.Contains(s.PIDs, pid) {
				continue
			}
			if s.Connected() {
				conns = append(conns, s)
				continue
			}
			fmt.Fprintf(w, "         %-5s %-12s %-24s %s\n", s.Proto, socketState(&s), s.Local, snapshot.Scope(s.Local.Addr(), s.V6Only))
		}
		writeConnections(w, conns)
	}
	var unheld []snapshot.PortSocket
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
			line += fmt.Sprintf("  owner %d %s (seen by porttrace)", s.Seen.PID, tracer.Printable(s.Seen.Comm))
		} else {
			line += "  owner unknown (closed before porttrace watched)"
		}
		fmt.Fprintln(w, line)
	}
}

// maxPeers is how many peers a connection summary names per state.
const maxPeers = 3

func writeConnections(w io.Writer, conns []snapshot.PortSocket) {
	byState := map[tracer.State][]snapshot.PortSocket{}
	var states []tracer.State
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
func socketState(s *snapshot.PortSocket) string {
	if s.Proto == tracer.ProtoUDP {
		return "-"
	}
	return s.State.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// jsonSocket and jsonReport are the JSON form of a report: a documented
// contract (README), like the watch's lines.
type jsonSocket struct {
	Proto      string            `json:"proto"`
	Family     string            `json:"family"`
	State      string            `json:"state"`
	Local      string            `json:"saddr"`
	LocalPort  uint16            `json:"sport"`
	Remote     string            `json:"daddr"`
	RemotePort uint16            `json:"dport"`
	Scope      string            `json:"scope,omitempty"`
	V6Only     bool              `json:"v6only,omitempty"`
	NetNS      uint32            `json:"netns"`
	TimerNs    int64             `json:"timer_ns,omitempty"`
	PIDs       []uint32          `json:"pids"`
	Seen       *snapshot.Process `json:"seen,omitempty"`
}

// socketJSON is a socket's JSON form, shared by who and why.
func socketJSON(s *snapshot.PortSocket) jsonSocket {
	js := jsonSocket{
		Proto: s.Proto.String(), Family: s.Family.String(), State: socketState(s),
		Local: s.Local.Addr().String(), LocalPort: s.Local.Port(),
		Remote: s.Remote.Addr().String(), RemotePort: s.Remote.Port(),
		V6Only: s.V6Only, NetNS: s.NetNS, TimerNs: s.TimerNs, PIDs: s.PIDs, Seen: s.Seen,
	}
	if js.PIDs == nil {
		js.PIDs = []uint32{}
	}
	if !s.Connected() {
		js.Scope = snapshot.Scope(s.Local.Addr(), s.V6Only)
	}
	return js
}

type jsonReport struct {
	Port      uint16              `json:"port"`
	Held      bool                `json:"held"`
	Processes []*snapshot.Process `json:"processes"`
	Sockets   []jsonSocket        `json:"sockets"`
	Notes     []string            `json:"notes,omitempty"`
}

// WhoJSON writes the report as one JSON object on one line.
func WhoJSON(w io.Writer, r *snapshot.PortReport) error {
	out := jsonReport{Port: r.Port, Held: r.Held(), Processes: []*snapshot.Process{}, Sockets: []jsonSocket{}, Notes: r.Notes}
	for _, pid := range r.PIDs() {
		out.Processes = append(out.Processes, r.Processes[pid])
	}
	for _, s := range r.Sockets {
		out.Sockets = append(out.Sockets, socketJSON(&s))
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
