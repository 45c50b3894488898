package render

import (
	"net/netip"
	"strconv"

	"github.com/porttrace/porttrace/tracer"
)

// Column widths of connection lines.
const (
	widthLifetime  = 10
	widthHandshake = 9
	widthCloser    = 6
)

// appendConnectionHeader appends the column titles of connection lines.
func (t *Text) appendConnectionHeader(b []byte) []byte {
	b = appendPadded(b, "TIME", t.Time.width()+1)
	b = appendPadded(b, "CLIENT", t.endpoint+1)
	b = appendPadded(b, "PID", widthPID+1)
	b = appendPadded(b, "COMM", widthComm+1)
	b = appendPadded(b, "SERVER", t.endpoint+1)
	b = appendPadded(b, "PID", widthPID+1)
	b = appendPadded(b, "COMM", widthComm+1)
	b = appendPadded(b, "MS", widthLifetime+1)
	b = appendPadded(b, "HANDSHAKE", widthHandshake+1)
	b = appendPadded(b, "CLOSER", widthCloser+1)
	b = append(b, "STATES (MS)"...)
	return append(b, '\n')
}

// AppendConnection appends c as one aligned line: when it ended, each end
// with its owner, the lifetime, the handshake, the end that closed first
// (CLOSER), then each traced end's states with the time spent in each,
// TIME_WAIT included. As AppendRecord, it widens the columns, with a new header,
// for an endpoint wider than any before.
func (t *Text) AppendConnection(b []byte, c *tracer.Connection) []byte {
	client, server := t.endpoints(netip.AddrPortFrom(c.Client.Addr, c.Client.Port), netip.AddrPortFrom(c.Server.Addr, c.Server.Port))
	if t.fit(client, server) {
		b = t.AppendHeader(b)
	}
	start := len(b)
	b = t.appendTime(b, c.EndNs)
	b = pad(b, start, t.Time.width()+1)
	for _, end := range []struct {
		*tracer.ConnEnd
		text []byte
	}{{&c.Client, client}, {&c.Server, server}} {
		start = len(b)
		b = append(b, end.text...)
		b = pad(b, start, t.endpoint+1)
		if end.Traced {
			b = appendOwner(b, &end.Process)
		} else {
			b = appendPadded(b, "-", widthPID+1)
			b = appendPadded(b, "-", widthComm+1)
		}
	}
	start = len(b)
	b = appendMs(b, c.LifetimeNs())
	b = pad(b, start, widthLifetime+1)
	start = len(b)
	b = appendMs(b, c.HandshakeNs)
	b = pad(b, start, widthHandshake+1)
	start = len(b)
	if c.ClosedFirst == tracer.CloserUnknown {
		b = append(b, '-')
	} else {
		b = append(b, c.ClosedFirst.String()...)
	}
	b = pad(b, start, widthCloser+1)

	sep := ""
	for _, e := range []struct {
		role string
		end  *tracer.ConnEnd
	}{{"client", &c.Client}, {"server", &c.Server}} {
		if !e.end.Traced {
			continue
		}
		b = append(b, sep...)
		b = append(b, e.role...)
		b = append(b, ':')
		for i, st := range e.end.States[:e.end.NStates] {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, ' ')
			b = append(b, st.State.String()...)
			b = append(b, ' ')
			b = appendMs(b, st.DurationNs)
		}
		if e.end.Reason != "" {
			b = append(b, ' ')
			b = append(b, e.end.Reason...)
		}
		if e.end.Err != 0 {
			b = append(b, ' ')
			b = append(b, tracer.ErrnoName(e.end.Err)...)
		}
		if e.end.OwnerVia == tracer.OwnerListener {
			b = append(b, " (not accepted: listener's owner)"...)
		}
		if e.end.OwnerExited {
			b = append(b, " (owner exited)"...)
		}
		sep = "; "
	}
	if c.Open {
		b = append(b, "  (open when the watch ended)"...)
	}
	switch {
	case !c.OpenSeen && !c.RolesKnown:
		b = append(b, "  (opened unseen: client and server not known)"...)
	case !c.OpenSeen:
		b = append(b, "  (opened unseen)"...)
	}
	b = t.Labels.appendNetNS(b, c.NetNS)
	return append(b, '\n')
}

// AppendConnectionJSON appends c as one JSON object and a newline, of type
// "connection". The fields are a documented contract (README).
func AppendConnectionJSON(b []byte, c *tracer.Connection) []byte {
	b = append(b, `{"time":"`...)
	b = appendJSONTime(b, c.EndNs)
	b = append(b, `","type":"connection","proto":"`...)
	b = append(b, c.Proto.String()...)
	b = append(b, `","netns":`...)
	b = strconv.AppendUint(b, uint64(c.NetNS), 10)
	b = append(b, `,"start":"`...)
	b = appendJSONTime(b, c.StartNs)
	b = append(b, `","lifetime_ns":`...)
	b = appendNsOrNull(b, c.LifetimeNs())
	b = append(b, `,"handshake_ns":`...)
	b = appendNsOrNull(b, c.HandshakeNs)
	b = append(b, `,"closed_first":"`...)
	b = append(b, c.ClosedFirst.String()...)
	b = append(b, `","roles_known":`...)
	b = strconv.AppendBool(b, c.RolesKnown)
	b = append(b, `,"open":`...)
	b = strconv.AppendBool(b, c.Open)
	if c.Err != 0 {
		b = append(b, `,"error":"`...)
		b = append(b, tracer.ErrnoName(c.Err)...)
		b = append(b, '"')
	}
	b = append(b, `,"client":`...)
	b = appendConnEndJSON(b, &c.Client)
	b = append(b, `,"server":`...)
	b = appendConnEndJSON(b, &c.Server)
	return append(b, "}\n"...)
}

func appendConnEndJSON(b []byte, e *tracer.ConnEnd) []byte {
	b = append(b, `{"traced":`...)
	b = strconv.AppendBool(b, e.Traced)
	b = append(b, `,"family":"`...)
	b = append(b, e.Family.String()...)
	b = append(b, `","addr":"`...)
	b = e.Addr.AppendTo(b)
	b = append(b, `","port":`...)
	b = strconv.AppendUint(b, uint64(e.Port), 10)
	if !e.Traced {
		return append(b, '}')
	}
	b = appendProcessJSON(b, &e.Process)
	b = append(b, `,"owner_via":"`...)
	b = append(b, e.OwnerVia.String()...)
	b = append(b, `","owner_exited":`...)
	b = strconv.AppendBool(b, e.OwnerExited)
	b = append(b, `,"states":[`...)
	for i, st := range e.States[:e.NStates] {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"state":"`...)
		b = append(b, st.State.String()...)
		b = append(b, `","duration_ns":`...)
		b = appendNsOrNull(b, st.DurationNs)
		b = append(b, '}')
	}
	b = append(b, ']')
	if e.Reason != "" {
		b = append(b, `,"reason":"`...)
		b = append(b, e.Reason...)
		b = append(b, '"')
	}
	if e.Err != 0 {
		b = append(b, `,"error":"`...)
		b = append(b, tracer.ErrnoName(e.Err)...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendNsOrNull writes a duration in nanoseconds, or null for one not
// known (negative).
func appendNsOrNull(b []byte, ns int64) []byte {
	if ns < 0 {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, ns, 10)
}
