package render

import (
	"github.com/porttrace/porttrace/tracer"

	"bytes"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// Column widths of the text format, wide enough for IPv4 endpoints and the
// longest transition; longer IPv6 endpoints push the line out, as in ss.
const (
	widthTime       = 15
	widthPID        = 7
	widthComm       = 16
	widthEndpoint   = 22
	widthTransition = 26
)

// TextHeader is the first line of the text format.
func TextHeader() string {
	var b []byte
	b = appendPadded(b, "TIME", widthTime+1)
	b = appendPadded(b, "PID", widthPID+1)
	b = appendPadded(b, "COMM", widthComm+1)
	b = appendPadded(b, "LOCAL", widthEndpoint+1)
	b = appendPadded(b, "REMOTE", widthEndpoint+1)
	b = appendPadded(b, "TRANSITION", widthTransition+1)
	b = append(b, "MS"...)
	return string(b)
}

// ANSI colours for the new state, on a terminal only.
const (
	colorReset  = "\x1b[0m"
	colorGreen  = "\x1b[32m"
	colorYellow = "\x1b[33m"
	colorRed    = "\x1b[31m"
	colorCyan   = "\x1b[36m"
)

func stateColor(r *tracer.Record) string {
	switch {
	case r.Err != 0:
		return colorRed
	case r.Type == tracer.RecordBind, r.Type == tracer.RecordOwner, r.New == tracer.StateListen:
		return colorCyan
	case r.New == tracer.StateEstablished:
		return colorGreen
	case r.New == tracer.StateTimeWait, r.New == tracer.StateFinWait2, r.New == tracer.StateCloseWait:
		return colorYellow
	case r.New == tracer.StateClose:
		return colorRed
	}
	return ""
}

// AppendText appends r as one aligned line of text, in local time, with
// ANSI colours when color is set, ending with the labels of its owner's
// container and its network namespace (nil labels: none).
func AppendText(b []byte, r *tracer.Record, loc *time.Location, color bool, labels *Labels) []byte {
	start := len(b)
	b = time.Unix(0, r.TimeNs).In(loc).AppendFormat(b, "15:04:05.000000")
	b = pad(b, start, widthTime+1)

	start = len(b)
	if r.PID == 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendUint(b, uint64(r.PID), 10)
	}
	b = pad(b, start, widthPID+1)

	start = len(b)
	if comm := r.Comm.Bytes(); len(comm) > 0 {
		b = tracer.AppendPrintable(b, comm)
	} else {
		b = append(b, '?')
	}
	b = pad(b, start, widthComm+1)

	start = len(b)
	b = appendEndpoint(b, r.SAddr, r.SPort)
	b = pad(b, start, widthEndpoint+1)

	start = len(b)
	switch {
	case r.Type == tracer.RecordBind:
		b = append(b, '-')
	case r.DPort == 0 && (!r.DAddr.IsValid() || r.DAddr.IsUnspecified()):
		b = append(b, '*') // a listener has no peer, as ss prints it
	default:
		b = appendEndpoint(b, r.DAddr, r.DPort)
	}
	b = pad(b, start, widthEndpoint+1)

	start = len(b)
	c := ""
	if color {
		c = stateColor(r)
	}
	b = append(b, c...)
	switch r.Type {
	case tracer.RecordBind:
		b = append(b, "BIND "...)
		b = append(b, r.Proto.String()...)
		if r.Err != 0 {
			b = append(b, ' ')
			b = append(b, tracer.ErrnoName(r.Err)...)
		}
	case tracer.RecordSocket:
		b = append(b, "at start: "...)
		b = append(b, r.New.String()...)
	case tracer.RecordOwner:
		b = append(b, "OWNER "...)
		b = append(b, r.New.String()...)
	default:
		b = append(b, r.Old.String()...)
		b = append(b, " -> "...)
		b = append(b, r.New.String()...)
	}
	if c != "" {
		b = append(b, colorReset...)
		start += len(c) + len(colorReset)
	}
	b = pad(b, start, widthTransition+1)

	if r.DurationNs >= 0 {
		b = strconv.AppendFloat(b, float64(r.DurationNs)/1e6, 'f', 3, 64)
	} else {
		b = append(b, '-')
	}
	if r.TimeoutNs > 0 && r.Type == tracer.RecordSocket {
		b = append(b, "  "...)
		b = strconv.AppendFloat(b, float64(r.TimeoutNs)/1e9, 'f', 1, 64)
		b = append(b, "s left"...)
	} else if r.TimeoutNs > 0 {
		b = append(b, "  timeout "...)
		b = strconv.AppendFloat(b, float64(r.TimeoutNs)/1e9, 'f', 1, 64)
		b = append(b, 's')
	}
	if r.Reason != "" {
		b = append(b, "  "...)
		b = append(b, r.Reason...)
	}
	if r.OwnerVia == tracer.OwnerListener {
		b = append(b, "  (not accepted: listener's owner)"...)
	}
	if r.OwnerExited {
		b = append(b, "  (owner exited)"...)
	}
	if r.Type == tracer.RecordOwner {
		b = append(b, "  from "...)
		b = strconv.AppendUint(b, uint64(r.Prev.PID), 10)
		b = append(b, ' ')
		b = tracer.AppendPrintable(b, r.Prev.Comm.Bytes())
		if r.PrevExited {
			b = append(b, " (exited)"...)
		}
		b = append(b, " via "...)
		b = append(b, r.OwnerVia.String()...)
	}
	// The COMM column names the program; the thread that acted, where it
	// has a name of its own, follows.
	if thread := r.Thread.Bytes(); len(thread) > 0 && !bytes.Equal(thread, r.Comm.Bytes()) {
		b = append(b, "  thread "...)
		b = tracer.AppendPrintable(b, thread)
	}
	b = labels.appendText(b, r)
	return append(b, '\n')
}

func appendEndpoint(b []byte, addr netip.Addr, port uint16) []byte {
	return netip.AddrPortFrom(addr, port).AppendTo(b)
}

// pad fills the column that started at start to width, always leaving one
// space before the next column.
func pad(b []byte, start, width int) []byte {
	n := width - (len(b) - start)
	if n < 1 {
		n = 1
	}
	for ; n > 0; n-- {
		b = append(b, ' ')
	}
	return b
}

func appendPadded(b []byte, s string, width int) []byte {
	start := len(b)
	return pad(append(b, s...), start, width)
}

// JSONTimeLayout is RFC 3339 with nanoseconds always written, so that every
// "time" field has the same width and sorts as text.
const JSONTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// AppendJSON appends r as one JSON object and a newline, with the fields
// labels knows of its owner's cgroup (nil labels: none). The fields are a
// documented contract (README): add, never rename.
func AppendJSON(b []byte, r *tracer.Record, labels *Labels) []byte {
	b = append(b, `{"time":"`...)
	b = time.Unix(0, r.TimeNs).UTC().AppendFormat(b, JSONTimeLayout)
	b = append(b, `","type":"`...)
	b = append(b, r.Type.String()...)
	b = append(b, `","proto":"`...)
	b = append(b, r.Proto.String()...)
	b = append(b, `","family":"`...)
	b = append(b, r.Family.String()...)
	b = append(b, `","saddr":"`...)
	b = r.SAddr.AppendTo(b)
	b = append(b, `","sport":`...)
	b = strconv.AppendUint(b, uint64(r.SPort), 10)
	if r.Type == tracer.RecordBind {
		b = append(b, `,"daddr":null,"dport":null,"old":null,"new":null`...)
	} else {
		b = append(b, `,"daddr":"`...)
		b = r.DAddr.AppendTo(b)
		b = append(b, `","dport":`...)
		b = strconv.AppendUint(b, uint64(r.DPort), 10)
		if r.Type == tracer.RecordSocket || r.Type == tracer.RecordOwner {
			b = append(b, `,"old":null,"new":"`...)
		} else {
			b = append(b, `,"old":"`...)
			b = append(b, r.Old.String()...)
			b = append(b, `","new":"`...)
		}
		b = append(b, r.New.String()...)
		b = append(b, '"')
	}
	b = append(b, `,"pid":`...)
	b = strconv.AppendUint(b, uint64(r.PID), 10)
	b = append(b, `,"comm":`...)
	b = appendJSONString(b, r.Comm.Bytes())
	b = append(b, `,"thread":`...)
	b = appendJSONString(b, r.Thread.Bytes())
	b = append(b, `,"start_ns":`...)
	b = strconv.AppendUint(b, r.StartNs, 10)
	b = append(b, `,"cgroup_id":`...)
	b = strconv.AppendUint(b, r.CgroupID, 10)
	b = labels.appendJSON(b, r)
	b = append(b, `,"owner_via":"`...)
	b = append(b, r.OwnerVia.String()...)
	b = append(b, `","netns":`...)
	b = strconv.AppendUint(b, uint64(r.NetNS), 10)
	b = append(b, `,"duration_ns":`...)
	if r.DurationNs >= 0 {
		b = strconv.AppendInt(b, r.DurationNs, 10)
	} else {
		b = append(b, "null"...)
	}
	if r.TimeoutNs > 0 {
		b = append(b, `,"timeout_ns":`...)
		b = strconv.AppendInt(b, r.TimeoutNs, 10)
	}
	if r.Reason != "" {
		b = append(b, `,"reason":"`...)
		b = append(b, r.Reason...)
		b = append(b, '"')
	}
	if r.OwnerExited {
		b = append(b, `,"owner_exited":true`...)
	}
	if r.Type == tracer.RecordOwner {
		b = append(b, `,"prev_pid":`...)
		b = strconv.AppendUint(b, uint64(r.Prev.PID), 10)
		b = append(b, `,"prev_comm":`...)
		b = appendJSONString(b, r.Prev.Comm.Bytes())
		b = append(b, `,"prev_start_ns":`...)
		b = strconv.AppendUint(b, r.Prev.StartNs, 10)
		b = append(b, `,"prev_exited":`...)
		b = strconv.AppendBool(b, r.PrevExited)
	}
	if r.Err != 0 {
		b = append(b, `,"error":"`...)
		b = append(b, tracer.ErrnoName(r.Err)...)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// appendJSONString writes s as a JSON string, escaping what JSON requires
// and replacing invalid UTF-8, as encoding/json does.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			b = append(b, s[:size]...)
		}
		s = s[size:]
	}
	return append(b, '"')
}
