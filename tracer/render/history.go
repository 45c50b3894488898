package render

import (
	"fmt"
	"io"
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
// one line (its fields are history.Result's).
func HistoryJSON(w io.Writer, r *history.Result) error { return writeJSONLine(w, r) }
