package tracer

import "net/netip"

// RecordType says what a line of porttrace's log reports.
type RecordType uint8

const (
	// RecordState is a TCP state transition.
	RecordState RecordType = iota + 1
	// RecordListen is a TCP socket entering LISTEN.
	RecordListen
	// RecordBind is a bind(2), successful or not.
	RecordBind
	// RecordSocket is a socket that existed when porttrace started, in its
	// state then (New).
	RecordSocket
	// RecordOwner is a socket changing hands, in its state then (New):
	// Process is the new owner, Prev the one before.
	RecordOwner
)

func (t RecordType) String() string {
	switch t {
	case RecordState:
		return "state"
	case RecordListen:
		return "listen"
	case RecordBind:
		return "bind"
	case RecordSocket:
		return "socket"
	case RecordOwner:
		return "owner"
	}
	return "unknown"
}

// OwnerVia says how the correlator learned a socket's owner: which call the
// owner made, or that it fell back to the listener's owner.
type OwnerVia uint8

const (
	OwnerUnknown OwnerVia = iota
	// OwnerConnect: the process called connect() (CLOSE -> SYN_SENT).
	OwnerConnect
	// OwnerListen: the process called listen().
	OwnerListen
	// OwnerAccept: the process accepted the connection.
	OwnerAccept
	// OwnerBind: the process called bind().
	OwnerBind
	// OwnerClose: the process closed or shut down a socket porttrace had
	// not seen before, or that another process owned (it changed hands:
	// fork, SCM_RIGHTS).
	OwnerClose
	// OwnerListener: nobody accepted the connection (yet); it is charged to
	// the process that owns the listener it arrived on.
	OwnerListener
	// OwnerSnapshot: the process held the socket when porttrace started.
	OwnerSnapshot
	// OwnerMPTCP: the socket is a subflow the kernel added to an MPTCP
	// connection (MP_JOIN) of this process's, which connected or
	// accepted it.
	OwnerMPTCP
	// OwnerHolder: the owner before exited, and porttrace found this
	// process holding the socket after it (the oldest of its holders).
	OwnerHolder
)

var ownerViaNames = [...]string{
	OwnerUnknown:  "unknown",
	OwnerConnect:  "connect",
	OwnerListen:   "listen",
	OwnerAccept:   "accept",
	OwnerBind:     "bind",
	OwnerClose:    "close",
	OwnerListener: "listener",
	OwnerSnapshot: "snapshot",
	OwnerMPTCP:    "mptcp",
	OwnerHolder:   "holder",
}

func (o OwnerVia) String() string {
	if int(o) < len(ownerViaNames) {
		return ownerViaNames[o]
	}
	return "unknown"
}

// Role says which end of a TCP connection a socket is: the client's, which
// connected, or the server's, which a listener took in; RoleUnknown for a
// socket that is neither or where nothing told (a connection older than
// porttrace whose ends no listener and no port range name).
type Role uint8

const (
	RoleUnknown Role = iota
	RoleClient
	RoleServer
)

// Record is one line of porttrace's log: a transition attributed to the
// process that owns the socket.
type Record struct {
	TimeNs int64
	Type   RecordType
	Proto  Proto
	Family Family
	Old    State
	New    State
	SAddr  netip.Addr
	DAddr  netip.Addr
	SPort  uint16
	DPort  uint16
	// Process is the socket's owner; its PID is 0 when nobody is known.
	// Its CgroupID is the owner's cgroup, or where no owner is known the
	// socket's own.
	Process
	OwnerVia OwnerVia
	// Role is which end of its connection the socket is, where known.
	Role Role
	// OwnerExited says the owner has exited: the socket outlived it (a
	// TIME_WAIT, an orphan closing, or a socket nobody else was found to
	// hold), and its pid may since name another program.
	OwnerExited bool
	// Prev is, on a RecordOwner line, the owner before, and PrevExited
	// whether it had exited.
	Prev       Process
	PrevExited bool
	NetNS      uint32
	// DurationNs is the time the socket spent in Old, or -1 when porttrace
	// did not see it enter Old.
	DurationNs int64
	// TimeoutNs is the lifetime of a timewait socket, on transitions into
	// TIME_WAIT or the timewait FIN_WAIT2.
	TimeoutNs int64
	// Err is the errno (positive) of a failed bind, or of the error a
	// transition into CLOSE was made for (Event.Err); 0 otherwise.
	Err int32
	// Reason says why a timewait socket went: "expired" or "killed".
	Reason string
	// Late marks a line that reached the output after lines later than
	// it: it was held back longer than the watch's reorder window.
	Late bool
}
