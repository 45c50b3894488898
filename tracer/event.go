// Package tracer holds porttrace's platform-neutral model: the events a
// kernel source (eBPF on Linux, ETW on Windows) emits, the correlator that
// turns them into per-socket owners and a TCP state-transition log, and the
// text and JSON formats of that log.
package tracer

import (
	"net/netip"
)

// Kind says what an Event reports.
type Kind uint8

const (
	// KindState is a TCP state change of a full socket (tcp_set_state,
	// Windows TcpTcbStateChange). PID is whoever was on the CPU, which on the
	// passive side is a softirq bystander: the correlator decides whether to
	// trust it.
	KindState Kind = iota + 1
	// KindBind is a bind(2) that returned: Err holds the negated errno of a
	// failure. PID is the caller.
	KindBind
	// KindAccept is a socket handed to a process by accept(2). PID is the
	// accepting process: the passive socket's real owner.
	KindAccept
	// KindConnect names the process that started an active open. Sources
	// whose state events already run in the caller's context (Linux) never
	// emit it; ETW does, because TcpTcbStateChange carries no process.
	KindConnect
	// KindTimeWaitStart is a timewait socket scheduled (or rescheduled) with
	// its substate in NewState (TIME_WAIT, or FIN_WAIT2 for an orphan) and
	// its lifetime in Timeout. Sock is the timewait socket itself: the full
	// socket that became it is found by its 4-tuple.
	KindTimeWaitStart
	// KindTimeWaitCancel is a timewait socket's timer stopped: either the
	// socket is being killed early (reuse, RST) or it is about to be
	// rescheduled or expire. The correlator tells which from what follows.
	KindTimeWaitCancel
	// KindTimeWaitExpire is a timewait socket reaching the end of its
	// lifetime.
	KindTimeWaitExpire
	// KindExit is a whole process exiting (its last thread), before its
	// files are closed: Process is the process, and the event has no
	// socket. The sockets it owned and still holds are closed next, or
	// live on in another process that holds them too.
	KindExit
)

var kindNames = [...]string{
	KindState:          "state",
	KindBind:           "bind",
	KindAccept:         "accept",
	KindConnect:        "connect",
	KindTimeWaitStart:  "timewait_start",
	KindTimeWaitCancel: "timewait_cancel",
	KindTimeWaitExpire: "timewait_expire",
	KindExit:           "exit",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// State is a TCP state numbered as Linux numbers them (include/net/tcp_states.h).
// Other platforms map their own states onto these.
type State uint8

const (
	StateUnknown     State = 0
	StateEstablished State = 1
	StateSynSent     State = 2
	StateSynRecv     State = 3
	StateFinWait1    State = 4
	StateFinWait2    State = 5
	StateTimeWait    State = 6
	StateClose       State = 7
	StateCloseWait   State = 8
	StateLastAck     State = 9
	StateListen      State = 10
	StateClosing     State = 11
	StateNewSynRecv  State = 12
	// StateCount is one past the highest State.
	StateCount = 13
)

var stateNames = [StateCount]string{
	StateUnknown:     "UNKNOWN",
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "NEW_SYN_RECV",
}

// UnheldStates are the TCP states, as a bit mask by State, of the sockets
// no process may hold: a timewait socket, an orphan closing after its
// process closed it, a handshake not yet accepted (SYN_RECV), and the
// states those pass through.
const UnheldStates = 1<<StateTimeWait | 1<<StateFinWait1 | 1<<StateFinWait2 |
	1<<StateClosing | 1<<StateLastAck | 1<<StateSynRecv | 1<<StateClose

// MayBeUnheld says a socket in state s may be one no process holds (see
// UnheldStates).
func (s State) MayBeUnheld() bool { return s < StateCount && UnheldStates&(1<<s) != 0 }

func (s State) String() string {
	if s < StateCount {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// ParseState is the State whose String() is name: the names porttrace
// prints, which are also those of the kernel's tracepoint and of
// libbpf-tools' tcpstates. ok is false for any other name.
func ParseState(name string) (s State, ok bool) {
	for i, n := range stateNames {
		if n == name {
			return State(i), true
		}
	}
	return StateUnknown, false
}

// Proto is the transport protocol, numbered as Linux's IPPROTO_* constants.
type Proto uint16

const (
	ProtoTCP Proto = 6
	ProtoUDP Proto = 17
	// ProtoMPTCP is Multipath TCP (IPPROTO_MPTCP). Its sockets carry TCP
	// subflows, which are what TCP state changes report.
	ProtoMPTCP Proto = 262
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoMPTCP:
		return "mptcp"
	}
	return "unknown"
}

// Family is the address family of a socket.
type Family uint8

const (
	FamilyIPv4 Family = 4
	FamilyIPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	}
	return "unknown"
}

// Carries reports whether a socket with these ends carries traffic of
// family f, the rule of -4 and -6. A connection is IPv4 when its addresses
// are IPv4 or IPv4-mapped (the IPv4 peers of a dual-stack socket),
// whichever family its socket is, so that both its ends follow one rule; a
// socket without a peer goes by its local address, and an IPv6 wildcard
// one that is not IPV6_V6ONLY serves both families. Family 0 carries
// everything. The Linux kernel side filters by the same rule
// (traffic_wanted in bpf/porttrace.bpf.c).
func (f Family) Carries(local, remote netip.Addr, v6only bool) bool {
	if f == 0 {
		return true
	}
	addr := remote
	if !addr.IsValid() || addr.IsUnspecified() {
		addr = local
	}
	switch {
	case addr.Is4() || addr.Is4In6():
		return f == FamilyIPv4
	case addr.IsUnspecified() && !v6only:
		return true
	}
	return f == FamilyIPv6
}

// CommLen is the size of a command name, as the Linux kernel's TASK_COMM_LEN.
const CommLen = 16

// Comm is a NUL-padded command name, kept as an array so that events carry it
// without allocating.
type Comm [CommLen]byte

// CommFrom makes a Comm from a string, cut to fit.
func CommFrom(s string) Comm {
	var c Comm
	copy(c[:CommLen-1], s)
	return c
}

// TrialBindThread names the thread porttrace's own trial binds (why,
// free) run on: the tracer leaves out the binds of a thread so named,
// porttrace asking the kernel rather than a program binding.
var TrialBindThread = CommFrom("porttrace-trial")

// Bytes returns the name without its NUL padding.
func (c *Comm) Bytes() []byte {
	for i, b := range c {
		if b == 0 {
			return c[:i]
		}
	}
	return c[:]
}

func (c Comm) String() string { return string(c.Bytes()) }

// Process identifies a process as porttrace reports it. A pid alone is no
// identity: the kernel reuses pids, so the start time goes with it.
type Process struct {
	PID uint32
	// PPID is the process's parent (the one that forked it, or the
	// reaper it was handed to) when it acted; 0 where unknown.
	PPID uint32
	// StartNs is when the process started, in nanoseconds since boot
	// (Linux: CLOCK_BOOTTIME, which /proc/PID/stat's field 22 counts in
	// clock ticks); 0 where the platform does not say.
	StartNs uint64
	// Comm is the process's name: its main thread's command name, which
	// ps, ss and /proc/PID/comm show.
	Comm Comm
	// Thread is the name of the thread that acted, which differs from Comm
	// where a program names its threads (Java's http-nio-8080-exec-1,
	// Chromium's Chrome_ChildIOT); empty where unknown.
	Thread Comm
	// CgroupID is the id of the process's cgroup v2 cgroup (the inode
	// number of its directory in the cgroup2 file system); 0 where unknown.
	CgroupID uint64
}

// Same reports whether p and q are one process: the same pid, started at
// the same time.
func (p *Process) Same(q *Process) bool { return p.PID == q.PID && p.StartNs == q.StartNs }

// Older reports whether p started before q (the lower pid first at the same
// time): of the processes holding a socket, the oldest (a daemon's master,
// a socket's first receiver) is taken for its owner.
func (p *Process) Older(q *Process) bool {
	if p.StartNs != q.StartNs {
		return p.StartNs < q.StartNs
	}
	return p.PID < q.PID
}

// SockID identifies one socket for as long as it lives: the kernel address of
// a struct sock or inet_timewait_sock on Linux, the TCB pointer on Windows.
// Addresses are reused after a socket is freed; the correlator forgets a
// socket when it closes, so reuse starts a new life.
type SockID uint64

// Event is one observation from a kernel source. Sources fill it in place
// and the correlator copies what it keeps, so a source can reuse one Event
// for every observation.
type Event struct {
	// TimeNs is the wall-clock time of the observation in nanoseconds since
	// the Unix epoch, derived from a monotonic kernel clock so that
	// differences between events are exact.
	TimeNs int64
	Kind   Kind
	Proto  Proto
	Family Family
	// OldState and NewState are the transition of a KindState event, and
	// NewState the substate of a KindTimeWaitStart.
	OldState State
	NewState State
	Sock     SockID
	// Parent is, for a TCP socket that is a subflow of an MPTCP
	// connection, the MPTCP socket: what the process holds, while the
	// subflow carries the traffic and the state changes.
	Parent SockID
	// SAddr:SPort is the socket's local end and DAddr:DPort its remote end,
	// as in the kernel's sock:inet_sock_set_state tracepoint.
	SAddr netip.Addr
	DAddr netip.Addr
	SPort uint16
	DPort uint16
	// Process is the process on the CPU when the event fired (for
	// KindBind, KindAccept and KindConnect, the process that made the
	// call), its CgroupID that of the task. A source may leave it zero
	// where nothing reads it: the Linux programs name it only for state
	// changes a process makes (see processContext in correlate), not for
	// the softirqs' and the timewait timers'.
	Process
	// KernelThread marks an event that fired in a kernel thread (a kworker
	// closing an MPTCP subflow, say): a kernel thread never owns a socket.
	KernelThread bool
	// SockCgroupID is the socket's own cgroup: that of the process that
	// created it (for an accepted socket, the listener's); 0 where
	// unknown. It names the cgroup of a socket whose owner is not known.
	SockCgroupID uint64
	// NetNS is the inode number of the socket's network namespace, 0 where
	// the platform has none.
	NetNS uint32
	// Err is the negated errno of a failed bind (0 on success) or, on a
	// KindState event into CLOSE, of the error the kernel closed the socket
	// for: a refused (ECONNREFUSED) or timed-out (ETIMEDOUT) connect, a
	// reset (ECONNRESET); 0 for a close without error, or where the
	// platform does not say.
	Err int32
	// TimeoutNs is a timewait socket's lifetime from TimeNs.
	TimeoutNs int64
	// Inode is a new listener's inode number, the name snapshots give a
	// socket (sock_diag, /proc/PID/fd): listeners sharing their address
	// and port (SO_REUSEPORT) differ by it. 0 where not given.
	Inode uint64
}
