package tracer

import "net/netip"

// MaxConnStates bounds the states a connection's end is followed through:
// more than TCP takes any socket through (a client's SYN_SENT,
// ESTABLISHED, FIN_WAIT1, FIN_WAIT2, TIME_WAIT; a simultaneous close's
// CLOSING).
const MaxConnStates = 8

// Closer says which end of a connection closed it first.
type Closer uint8

const (
	CloserUnknown Closer = iota
	CloserClient
	CloserServer
	// CloserBoth: a simultaneous close, each end's FIN sent before the
	// other's came.
	CloserBoth
)

var closerNames = [...]string{CloserUnknown: "unknown", CloserClient: "client", CloserServer: "server", CloserBoth: "both"}

func (c Closer) String() string {
	if int(c) < len(closerNames) {
		return closerNames[c]
	}
	return "unknown"
}

// StateTime is a state an end of a connection passed through, and how long
// it stayed there: -1 where porttrace did not see it enter the state.
type StateTime struct {
	DurationNs int64
	State      State
}

// ConnEnd is one end of a connection: its socket's address and owner and,
// where porttrace traced that socket, the states it passed through.
type ConnEnd struct {
	// Traced says porttrace saw this end's socket: the other end of a
	// connection to another machine is only an address.
	Traced bool
	Family Family
	Addr   netip.Addr
	Port   uint16
	// Process is the socket's last owner, as on its last line.
	Process
	OwnerVia    OwnerVia
	OwnerExited bool
	// States are the states the socket passed through, in order, up to
	// MaxConnStates (a state entered again adds to its time).
	States  [MaxConnStates]StateTime
	NStates uint8
	// Gone says its socket entered CLOSE: a transition of its own, which
	// States, the states it stayed in, leaves out.
	Gone bool
	// Reason says how its TIME_WAIT ended: "expired" or "killed".
	Reason string
	// Err is the errno the kernel closed the socket for, 0 for none.
	Err int32
}

// Connection is a TCP connection from its opening to its end (the last
// of its sockets gone, TIME_WAIT included): the line of a watch with
// --connections. Where porttrace traced both of its sockets (a connection
// between two local processes) it has both ends' owners and states.
type Connection struct {
	Proto Proto
	NetNS uint32
	// Client is the end that connected, Server the one that accepted.
	// RolesKnown is false where neither end's handshake was seen nor
	// Server's port was seen listening (a connection older than the
	// watch): Client is then the end seen first.
	Client, Server ConnEnd
	RolesKnown     bool
	// StartNs is when the connection opened: when its first end entered
	// the first state porttrace saw it in (SYN_SENT, for a connect).
	StartNs int64
	// OpenSeen says porttrace saw the connection open (a connect, or the
	// handshake of an accepted one). Where it did not (a connection older
	// than the watch, or whose first events were lost), StartNs is when
	// porttrace first saw it, and its lifetime is not known.
	OpenSeen bool
	// ClosedNs is when the last of its traced ends closed (entered CLOSE,
	// or TIME_WAIT), 0 if one had not when the watch ended.
	ClosedNs int64
	// EndNs is when the last of its sockets went, or the watch ended.
	EndNs int64
	// HandshakeNs is how long the handshake took: the client's SYN_SENT,
	// or else the server's SYN_RECV; -1 where neither was seen whole.
	HandshakeNs int64
	// ClosedFirst is the end that closed first (its FIN or reset first).
	ClosedFirst Closer
	// Err is the errno one of its ends was closed for: a refused or
	// timed-out connect, a reset; 0 for none.
	Err int32
	// Open says the watch ended before the connection did.
	Open bool
}

// LifetimeNs is the time from the opening to the close of both ends (a
// TIME_WAIT after that is in its end's States), or to the end of the
// watch for a connection still open then; -1 where the opening was not
// seen.
func (c *Connection) LifetimeNs() int64 {
	switch {
	case !c.OpenSeen:
		return -1
	case c.ClosedNs == 0:
		return c.EndNs - c.StartNs
	}
	return c.ClosedNs - c.StartNs
}
