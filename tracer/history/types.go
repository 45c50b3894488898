package history

import (
	"net/netip"

	"github.com/porttrace/porttrace/tracer"
)

// Process is what history keeps of a process: the facts known when it
// acted, since it may be long gone when someone asks.
type Process struct {
	PID  uint32
	Comm string
	// StartNs is when the process started (ns since the Unix epoch), 0 if
	// unknown: with PID it tells a process from a later one reusing its
	// pid.
	StartNs int64
	// User, Exe and Cmdline are filled in by Options.Describe, if set.
	User    string
	Exe     string
	Cmdline string
}

// Socket is the local end a process held, bound or tried to bind.
type Socket struct {
	Proto tracer.Proto
	NetNS uint32
	// Addr is the local address; its family is the socket's. It is the
	// unspecified address of a wildcard bind, and invalid where the
	// platform did not say.
	Addr netip.Addr
	Port uint16
}

// End says how a holder let go of its port.
type End uint8

const (
	// EndNone: it still holds the port.
	EndNone End = iota
	// EndClosed: porttrace saw it close (a listener's LISTEN -> CLOSE, or
	// the end of the connection a bound socket made).
	EndClosed
	// EndHandedOver: another process took the socket over (see
	// OwnerChange).
	EndHandedOver
	// EndUnseen: porttrace did not see it end. It was gone when porttrace
	// started again (UntilNs is then), or porttrace stopped following it
	// because the port had more bound sockets whose end it cannot see
	// (UDP) than it keeps open.
	EndUnseen
)

var endNames = [...]string{EndNone: "", EndClosed: "closed", EndHandedOver: "handed over", EndUnseen: "unseen"}

func (e End) String() string {
	if int(e) < len(endNames) {
		return endNames[e]
	}
	return "unknown"
}

// Holder is one process holding a port, from when to when: a socket it
// bound or listened on.
type Holder struct {
	Socket Socket
	Owner  Process
	// Via says how porttrace learned of it: bind, listen, or snapshot (it
	// already held the port when porttrace started, and FromNs is when
	// porttrace first saw it).
	Via tracer.OwnerVia
	// FromNs is when it started holding the port; 0 if porttrace only saw
	// the end.
	FromNs int64
	// ListenNs is when it started listening, 0 if it never did.
	ListenNs int64
	// UntilNs is when it let go, 0 while it holds the port.
	UntilNs int64
	End     End
}

// Held reports whether the holder still holds the port.
func (h *Holder) Held() bool { return h.End == EndNone }

// FailedBind is a bind(2) that failed.
type FailedBind struct {
	TimeNs int64
	// Socket is the address and port that were asked for.
	Socket Socket
	// Errno is the (positive, Linux-numbered) error: tracer.ErrnoName
	// names it.
	Errno int32
	By    Process
}

// OwnerChange is a socket holding a port passing from one process to
// another: a descriptor passed on or inherited, a supervisor binding for a
// worker.
type OwnerChange struct {
	TimeNs int64
	Socket Socket
	From   Process
	To     Process
	// Via says how porttrace learned of the change (listen: a process
	// listened on a socket another process had bound).
	Via tracer.OwnerVia
}

// ConnCounts counts connections on a port: opened is a socket reaching
// ESTABLISHED, closed one leaving it, so that opened minus closed is the
// change in connections open.
type ConnCounts struct {
	Opened uint32
	Closed uint32
}

// Connections are a port's connection counts in one minute. Inbound
// connections are accepted on the port here; outbound ones are made from
// this host to the port elsewhere.
type Connections struct {
	// MinuteNs is the start of the minute.
	MinuteNs int64
	Inbound  ConnCounts
	Outbound ConnCounts
}

// Result is what history knows of a port over a time range.
type Result struct {
	Port             uint16
	SinceNs, UntilNs int64
	// Holders held the port at some time in the range, in the order they
	// started.
	Holders []Holder
	// FailedBinds, OwnerChanges and Connections fell in the range, oldest
	// first.
	FailedBinds  []FailedBind
	OwnerChanges []OwnerChange
	Connections  []Connections
	// Dropped counts the changes (of any port) that never reached the
	// database since the store was opened: its writer fell behind (a slow
	// disk under a storm of binds) or stopped (a full disk). What they
	// said is missing from this answer too, maybe.
	Dropped uint64
}
