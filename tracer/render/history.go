package render

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/history"
)

// HistoryText writes what history knows of a port for a person: who held
// it from when to when, failed binds with their errno and who tried, owner
// changes, and the connections opened and closed per minute.
func HistoryText(w io.Writer, r *history.Result, loc *time.Location) {
	at := func(ns int64) string { return time.Unix(0, ns).In(loc).Format("2006-01-02 15:04:05") }
	fmt.Fprintf(w, "port %d from %s to %s\n", r.Port, at(r.SinceNs), at(r.UntilNs))
	if r.Dropped > 0 {
		fmt.Fprintf(w, "note: history dropped %d changes (of any port) since the daemon started: its writer fell behind (a slow disk) or stopped (a full disk; see its log), so this may lack some\n", r.Dropped)
	}
	if len(r.Holders) == 0 && len(r.FailedBinds) == 0 && len(r.Connections) == 0 {
		fmt.Fprintln(w, "\nnothing recorded")
		return
	}
	if len(r.Holders) > 0 {
		fmt.Fprintln(w, "\nHELD BY")
		for _, h := range r.Holders {
			from := "before " + at(r.SinceNs)
			if h.FromNs != 0 {
				from = at(h.FromNs)
			}
			until := "now"
			if !h.Held() {
				until = at(h.UntilNs) + " (" + h.End.String() + ")"
			}
			fmt.Fprintf(w, "  %s %d  %s %s:%d  %s -> %s  via %s\n", tracer.Printable(h.Owner.Comm), h.Owner.PID,
				h.Socket.Proto, h.Socket.Addr, h.Socket.Port, from, until, h.Via)
			if h.Owner.Cmdline != "" {
				fmt.Fprintf(w, "      cmd %s  user %s\n", tracer.Printable(h.Owner.Cmdline), orDash(tracer.Printable(h.Owner.User)))
			}
		}
	}
	if len(r.OwnerChanges) > 0 {
		fmt.Fprintln(w, "\nCHANGED HANDS")
		for _, c := range r.OwnerChanges {
			fmt.Fprintf(w, "  %s  %s %d -> %s %d  via %s\n", at(c.TimeNs), tracer.Printable(c.From.Comm), c.From.PID,
				tracer.Printable(c.To.Comm), c.To.PID, c.Via)
		}
	}
	if len(r.FailedBinds) > 0 {
		fmt.Fprintln(w, "\nFAILED BINDS")
		for _, b := range r.FailedBinds {
			fmt.Fprintf(w, "  %s  %s %d  %s %s:%d  %s\n", at(b.TimeNs), tracer.Printable(b.By.Comm), b.By.PID,
				b.Socket.Proto, b.Socket.Addr, b.Socket.Port, tracer.ErrnoName(b.Errno))
		}
	}
	if len(r.Connections) > 0 {
		fmt.Fprintln(w, "\nCONNECTIONS PER MINUTE (opened/closed)")
		for _, c := range r.Connections {
			fmt.Fprintf(w, "  %s  in %d/%d  out %d/%d\n", at(c.MinuteNs), c.Inbound.Opened, c.Inbound.Closed, c.Outbound.Opened, c.Outbound.Closed)
		}
	}
}

// HistoryJSON writes what history knows of a port as one JSON object on
// one line, named as the watch's and who's JSON name things: snake_case
// keys, protocols, errnos and how an owner was learned by name, times as
// RFC 3339 in UTC (null where not known).
func HistoryJSON(w io.Writer, r *history.Result) error {
	out := jsonHistory{
		Port: r.Port, Since: jsonWallTime(r.SinceNs), Until: jsonWallTime(r.UntilNs), Dropped: r.Dropped,
		Holders: []jsonHolder{}, FailedBinds: []jsonFailedBind{}, OwnerChanges: []jsonOwnerChange{}, Connections: []jsonConnections{},
	}
	for _, h := range r.Holders {
		j := jsonHolder{jsonHistorySocket: historySocketJSON(h.Socket), jsonHistoryProcess: historyProcessJSON(h.Owner),
			OwnerVia: h.Via.String(), From: jsonWallTime(h.FromNs), Listen: jsonWallTime(h.ListenNs), Until: jsonWallTime(h.UntilNs)}
		if !h.Held() {
			end := strings.ReplaceAll(h.End.String(), " ", "_") // handed over: handed_over
			j.End = &end
		}
		out.Holders = append(out.Holders, j)
	}
	for _, b := range r.FailedBinds {
		out.FailedBinds = append(out.FailedBinds, jsonFailedBind{Time: jsonWallTime(b.TimeNs), jsonHistorySocket: historySocketJSON(b.Socket),
			Error: tracer.ErrnoName(b.Errno), jsonHistoryProcess: historyProcessJSON(b.By)})
	}
	for _, c := range r.OwnerChanges {
		out.OwnerChanges = append(out.OwnerChanges, jsonOwnerChange{Time: jsonWallTime(c.TimeNs), jsonHistorySocket: historySocketJSON(c.Socket),
			From: historyProcessJSON(c.From), To: historyProcessJSON(c.To), OwnerVia: c.Via.String()})
	}
	for _, c := range r.Connections {
		out.Connections = append(out.Connections, jsonConnections{Minute: jsonWallTime(c.MinuteNs),
			Inbound: jsonConnCounts(c.Inbound), Outbound: jsonConnCounts(c.Outbound)})
	}
	return writeJSONLine(w, out)
}

type jsonHistory struct {
	Port         uint16            `json:"port"`
	Since        *string           `json:"since"`
	Until        *string           `json:"until"`
	Holders      []jsonHolder      `json:"holders"`
	FailedBinds  []jsonFailedBind  `json:"failed_binds"`
	OwnerChanges []jsonOwnerChange `json:"owner_changes"`
	Connections  []jsonConnections `json:"connections"`
	Dropped      uint64            `json:"dropped"`
}

type jsonHistorySocket struct {
	Proto string `json:"proto"`
	NetNS uint32 `json:"netns"`
	Addr  string `json:"addr"`
	Port  uint16 `json:"port"`
}

func historySocketJSON(s history.Socket) jsonHistorySocket {
	addr := ""
	if s.Addr.IsValid() {
		addr = s.Addr.String()
	}
	return jsonHistorySocket{Proto: s.Proto.String(), NetNS: s.NetNS, Addr: addr, Port: s.Port}
}

// jsonHistoryProcess is a process as history kept it; start is on the
// wall clock (the watch's start_ns counts from boot).
type jsonHistoryProcess struct {
	PID     uint32  `json:"pid"`
	Comm    string  `json:"comm"`
	Start   *string `json:"start"`
	User    string  `json:"user"`
	Exe     string  `json:"exe"`
	Cmdline string  `json:"cmdline"`
}

func historyProcessJSON(p history.Process) jsonHistoryProcess {
	return jsonHistoryProcess{PID: p.PID, Comm: p.Comm, Start: jsonWallTime(p.StartNs), User: p.User, Exe: p.Exe, Cmdline: p.Cmdline}
}

type jsonHolder struct {
	jsonHistorySocket
	jsonHistoryProcess
	OwnerVia string  `json:"owner_via"`
	From     *string `json:"from"`
	Listen   *string `json:"listen"`
	Until    *string `json:"until"`
	End      *string `json:"end"` // history.End's name, snake_case; nil while it holds the port
}

type jsonFailedBind struct {
	Time *string `json:"time"`
	jsonHistorySocket
	Error string `json:"error"`
	jsonHistoryProcess
}

type jsonOwnerChange struct {
	Time *string `json:"time"`
	jsonHistorySocket
	From     jsonHistoryProcess `json:"from"`
	To       jsonHistoryProcess `json:"to"`
	OwnerVia string             `json:"owner_via"`
}

type jsonConnections struct {
	Minute   *string          `json:"minute"`
	Inbound  jsonConnCountsOf `json:"inbound"`
	Outbound jsonConnCountsOf `json:"outbound"`
}

type jsonConnCountsOf struct {
	Opened uint32 `json:"opened"`
	Closed uint32 `json:"closed"`
}

func jsonConnCounts(c history.ConnCounts) jsonConnCountsOf {
	return jsonConnCountsOf{Opened: c.Opened, Closed: c.Closed}
}

// jsonWallTime is a time in ns since the epoch as RFC 3339 in UTC with 9
// fractional digits, as the watch writes its lines' time; nil for 0 (not
// known).
func jsonWallTime(ns int64) *string {
	if ns == 0 {
		return nil
	}
	s := string(appendJSONTime(nil, ns))
	return &s
}
