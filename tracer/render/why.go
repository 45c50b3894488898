package render

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/why"
)

// WhyText writes a verdict for a person: the answer first, then each
// blocker with its owner and what would unblock it. Connections no process
// holds are grouped: a port can have thousands in TIME_WAIT.
func WhyText(w io.Writer, v *why.Verdict) {
	req := v.Request
	target := fmt.Sprintf("bind(%s) over %s", netip.AddrPortFrom(req.Address(), req.Port), protoName(req))
	if opts := options(req); opts != "" {
		target += " with " + opts
	}
	if v.Free {
		fmt.Fprintf(w, "%s would succeed now (tried)\n", target)
		if n := len(v.Sharing); n > 0 {
			fmt.Fprintf(w, "\nit would share the port with %d socket(s) that allow it:\n", n)
			for _, s := range v.Sharing {
				fmt.Fprintf(w, "  %-5s %-12s %s\n", s.Proto, socketState(&s), tracer.Endpoint(s.Local))
			}
		}
	} else {
		fmt.Fprintf(w, "%s would fail now: %s (tried)\n", target, v.Errno)
		writeBlockers(w, v.Blockers)
	}
	for _, n := range v.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
}

func writeBlockers(w io.Writer, blockers []why.Blocker) {
	// A process's connections in one state are one blocker: a busy server
	// holds thousands.
	type heldKey struct {
		pid   uint32
		state tracer.State
	}
	var held [][]*why.Blocker
	groups := map[heldKey]int{}
	var ownerless []why.Blocker
	for i := range blockers {
		b := &blockers[i]
		if !b.Socket.Held() {
			ownerless = append(ownerless, *b)
			continue
		}
		if b.Socket.Connected() && b.Owner != nil {
			k := heldKey{b.Owner.PID, b.Socket.State}
			if g, ok := groups[k]; ok {
				held[g] = append(held[g], b)
				continue
			}
			groups[k] = len(held)
		}
		held = append(held, []*why.Blocker{b})
	}
	n := 0
	for _, g := range held {
		b := g[0]
		n++
		if len(g) == 1 {
			fmt.Fprintf(w, "\n%d. %s\n", n, tracer.Printable(b.Reason))
		} else {
			fmt.Fprintf(w, "\n%d. %d connections in %s\n   e.g. %s\n", n, len(g), b.Socket.State, tracer.Printable(b.Reason))
		}
		if b.Owner != nil {
			fmt.Fprintf(w, "   held by %s %d", tracer.Printable(b.Owner.Name), b.Owner.PID)
			if b.Owner.User != "" {
				fmt.Fprintf(w, " (user %s)", b.Owner.User)
			}
			fmt.Fprintln(w)
		}
		writeUnblock(w, b.Unblock)
	}
	if len(ownerless) == 0 {
		return
	}
	n++
	if len(ownerless) == 1 {
		b := ownerless[0]
		fmt.Fprintf(w, "\n%d. %s\n", n, tracer.Printable(b.Reason))
		if b.Owner != nil {
			fmt.Fprintf(w, "   owned by %s %d before it closed (seen by porttrace)\n", tracer.Printable(b.Owner.Name), b.Owner.PID)
		}
		writeUnblock(w, b.Unblock)
		return
	}
	// Many connections no process holds: count them by state and say
	// when the last one goes.
	byState := map[string]int{}
	var states []string
	var last int64
	for _, b := range ownerless {
		st := b.Socket.State.String()
		if byState[st] == 0 {
			states = append(states, st)
		}
		byState[st]++
		last = max(last, b.Socket.TimerNs)
	}
	var parts []string
	for _, st := range states {
		parts = append(parts, fmt.Sprintf("%d in %s", byState[st], st))
	}
	fmt.Fprintf(w, "\n%d. %d connections no process holds: %s", n, len(ownerless), strings.Join(parts, ", "))
	if last > 0 {
		fmt.Fprintf(w, "; the last is freed in %s", time.Duration(last).Round(time.Second))
	}
	fmt.Fprintf(w, "\n   e.g. %s\n", tracer.Printable(ownerless[0].Reason))
	if owners := seenOwners(ownerless); owners != "" {
		fmt.Fprintf(w, "   owners porttrace saw before they closed: %s\n", owners)
	}
	writeUnblock(w, ownerless[0].Unblock[1:])
	if last > 0 {
		fmt.Fprintf(w, "   or wait %s\n", time.Duration(last).Round(time.Second))
	}
}

// maxSeenOwners is how many owners a group of connections no process
// holds names.
const maxSeenOwners = 3

// seenOwners names the owners porttrace saw of connections no process
// holds, the most connections first, with their counts: "nginx 16451 (30),
// curl 4242 (2)"; "" where it saw none.
func seenOwners(blockers []why.Blocker) string {
	type owner struct {
		name string
		pid  uint32
		n    int
	}
	var owners []owner
	for _, b := range blockers {
		if b.Owner == nil {
			continue
		}
		i := slices.IndexFunc(owners, func(o owner) bool { return o.pid == b.Owner.PID && o.name == b.Owner.Name })
		if i < 0 {
			i = len(owners)
			owners = append(owners, owner{name: b.Owner.Name, pid: b.Owner.PID})
		}
		owners[i].n++
	}
	slices.SortStableFunc(owners, func(a, b owner) int { return b.n - a.n })
	var parts []string
	for i, o := range owners {
		if i == maxSeenOwners {
			parts = append(parts, fmt.Sprintf("%d more", len(owners)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d (%d)", tracer.Printable(o.name), o.pid, o.n))
	}
	return strings.Join(parts, ", ")
}

func writeUnblock(w io.Writer, unblock []string) {
	for i, u := range unblock {
		lead := "   or "
		if i == 0 {
			lead = "   to unblock: "
		}
		fmt.Fprintf(w, "%s%s\n", lead, u)
	}
}

func protoName(req why.Request) string {
	if req.UDP {
		return "UDP"
	}
	return "TCP"
}

func options(req why.Request) string {
	var opts []string
	if req.ReuseAddr {
		opts = append(opts, "SO_REUSEADDR")
	}
	if req.ReusePort {
		opts = append(opts, "SO_REUSEPORT")
	}
	if req.V6Only {
		opts = append(opts, "IPV6_V6ONLY")
	}
	return strings.Join(opts, ", ")
}

type jsonWhyRequest struct {
	Addr      string `json:"addr"`
	Port      uint16 `json:"port"`
	Proto     string `json:"proto"`
	ReuseAddr bool   `json:"reuseaddr"`
	ReusePort bool   `json:"reuseport"`
	V6Only    bool   `json:"v6only"`
	UID       uint32 `json:"uid"`
}

type jsonBlocker struct {
	Socket  jsonSocket    `json:"socket"`
	Owner   *proc.Process `json:"owner,omitempty"`
	Reason  string        `json:"reason"`
	Unblock []string      `json:"unblock"`
}

type jsonVerdict struct {
	Request  jsonWhyRequest `json:"request"`
	Free     bool           `json:"free"`
	Errno    string         `json:"errno,omitempty"`
	Blockers []jsonBlocker  `json:"blockers"`
	Sharing  []jsonSocket   `json:"sharing"`
	Notes    []string       `json:"notes,omitempty"`
}

// WhyJSON writes a verdict as one JSON object on one line, every blocker
// listed (not grouped).
func WhyJSON(w io.Writer, v *why.Verdict) error {
	req := v.Request
	out := jsonVerdict{
		Request: jsonWhyRequest{Addr: req.Address().String(), Port: req.Port, Proto: strings.ToLower(protoName(req)),
			ReuseAddr: req.ReuseAddr, ReusePort: req.ReusePort, V6Only: req.V6Only, UID: req.UID},
		Free: v.Free, Errno: v.Errno, Blockers: []jsonBlocker{}, Sharing: []jsonSocket{}, Notes: v.Notes,
	}
	for _, b := range v.Blockers {
		out.Blockers = append(out.Blockers, jsonBlocker{Socket: socketJSON(v.Report, &b.Socket), Owner: b.Owner, Reason: b.Reason, Unblock: b.Unblock})
	}
	for _, s := range v.Sharing {
		out.Sharing = append(out.Sharing, socketJSON(v.Report, &s))
	}
	return writeJSONLine(w, out)
}
