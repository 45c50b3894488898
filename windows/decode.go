package windows

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/porttrace/porttrace/tracer"
)

// Decoding errors are sentinels so that a malformed event costs no
// allocation; the source counts them instead of failing.
var (
	errTruncated      = errors.New("payload truncated")
	errPointerSize    = errors.New("pointer size is neither 4 nor 8")
	errSockaddrFamily = errors.New("sockaddr family is neither AF_INET nor AF_INET6")
	errSockaddrLength = errors.New("sockaddr shorter than its family needs")
	errFamilyMismatch = errors.New("local and remote sockaddrs differ in family")
	errTCPState       = errors.New("tcp state out of range")
	errUnknownEvent   = errors.New("event id not decoded")
)

// Address families as SOCKADDR and the iphlpapi calls number them.
const (
	afInet  = 2
	afInet6 = 23
)

// Sizes of SOCKADDR_IN and SOCKADDR_IN6.
const (
	sockaddrInLen  = 16
	sockaddrIn6Len = 28
)

// payloadReader walks an event payload front to back. The first failure
// sticks, so a decoder reads every field and checks err once.
type payloadReader struct {
	b   []byte
	err error
}

func (r *payloadReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = errTruncated
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *payloadReader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

// pointer reads a pointer-sized field as ETW wrote it: the writer's pointer
// size, not ours, decides its width.
func (r *payloadReader) pointer(size int) uint64 {
	switch size {
	case 4:
		return uint64(r.u32())
	case 8:
		if p := r.take(8); p != nil {
			return binary.LittleEndian.Uint64(p)
		}
		return 0
	}
	if r.err == nil {
		r.err = errPointerSize
	}
	return 0
}

func (r *payloadReader) addr(family tracer.Family) netip.Addr {
	if family == tracer.FamilyIPv4 {
		if p := r.take(4); p != nil {
			return netip.AddrFrom4([4]byte(p))
		}
		return netip.Addr{}
	}
	if p := r.take(16); p != nil {
		return netip.AddrFrom16([16]byte(p))
	}
	return netip.Addr{}
}

// sockaddr reads a u32 length followed by a SOCKADDR of that length, the
// way the TCPIP provider writes addresses.
func (r *payloadReader) sockaddr() (netip.Addr, uint16, tracer.Family) {
	n := r.u32()
	if r.err != nil {
		return netip.Addr{}, 0, 0
	}
	if uint64(n) > uint64(len(r.b)) {
		r.err = errTruncated
		return netip.Addr{}, 0, 0
	}
	addr, port, family, err := decodeSockaddr(r.take(int(n)))
	if err != nil {
		r.err = err
	}
	return addr, port, family
}

// endpoints reads the local then the remote length-prefixed SOCKADDR into
// ev's local and remote ends.
func (r *payloadReader) endpoints(ev *tracer.Event) {
	var remoteFamily tracer.Family
	ev.SAddr, ev.SPort, ev.Family = r.sockaddr()
	ev.DAddr, ev.DPort, remoteFamily = r.sockaddr()
	if r.err == nil && ev.Family != remoteFamily {
		r.err = errFamilyMismatch
	}
}

// decodeSockaddr decodes a SOCKADDR_IN or SOCKADDR_IN6: a little-endian
// family, then the port in network order, then the address (at +4 for IPv4,
// after the flow info at +8 for IPv6). A scope id is not kept.
func decodeSockaddr(b []byte) (netip.Addr, uint16, tracer.Family, error) {
	if len(b) < 2 {
		return netip.Addr{}, 0, 0, errSockaddrLength
	}
	var family tracer.Family
	var addrAt, minLen int
	switch binary.LittleEndian.Uint16(b) {
	case afInet:
		family, addrAt, minLen = tracer.FamilyIPv4, 4, sockaddrInLen
	case afInet6:
		family, addrAt, minLen = tracer.FamilyIPv6, 8, sockaddrIn6Len
	default:
		return netip.Addr{}, 0, 0, errSockaddrFamily
	}
	if len(b) < minLen {
		return netip.Addr{}, 0, 0, errSockaddrLength
	}
	port := binary.BigEndian.Uint16(b[2:])
	r := payloadReader{b: b[addrAt:]}
	return r.addr(family), port, family, nil
}

// etwStates maps TCP_CONNECTION_STATE, the numbering of the TCPIP
// provider, onto the Linux numbering of tracer.State.
var etwStates = [...]tracer.State{
	0:  tracer.StateClose,
	1:  tracer.StateListen,
	2:  tracer.StateSynSent,
	3:  tracer.StateSynRecv,
	4:  tracer.StateEstablished,
	5:  tracer.StateFinWait1,
	6:  tracer.StateFinWait2,
	7:  tracer.StateCloseWait,
	8:  tracer.StateClosing,
	9:  tracer.StateLastAck,
	10: tracer.StateTimeWait,
}

func etwState(v uint32) (tracer.State, error) {
	if uint64(v) >= uint64(len(etwStates)) {
		return tracer.StateUnknown, errTCPState
	}
	return etwStates[v], nil
}

// Microsoft-Windows-TCPIP event ids that porttrace decodes.
const (
	idTCPRequestConnect               = 1002
	idTCPAcceptListenerComplete       = 1017
	idTCPConnectTcbComplete           = 1033
	idTCPCloseTcbRequest              = 1038
	idTCPAbortTcbRequest              = 1039
	idTCPAbortTcbComplete             = 1040
	idTCPDisconnectTcbComplete        = 1043
	idTCPShutdownTcb                  = 1044
	idTCPTcbStateChange               = 1051
	idTCPDisconnectTcbFinWait2Timeout = 1201
	idTCPConnectionRundown            = 1300
)

// tcpipEventIDs is every id decodeTCPIP knows, for the session's event id
// filter.
var tcpipEventIDs = [...]uint16{
	idTCPRequestConnect,
	idTCPAcceptListenerComplete,
	idTCPConnectTcbComplete,
	idTCPCloseTcbRequest,
	idTCPAbortTcbRequest,
	idTCPAbortTcbComplete,
	idTCPDisconnectTcbComplete,
	idTCPShutdownTcb,
	idTCPTcbStateChange,
	idTCPDisconnectTcbFinWait2Timeout,
	idTCPConnectionRundown,
}

// kindEndpoints marks an event the model has no kind for (a close, an
// abort, a rundown): it is never delivered, but it names a Tcb's endpoints,
// which the joiner lends to that Tcb's state changes. Its NewState is the
// Tcb's state where the event tells it: CLOSED for a connect request, the
// current state for a rundown, StateUnknown otherwise.
const kindEndpoints tracer.Kind = 0

// decodeTCPIP decodes a Microsoft-Windows-TCPIP event into ev, which the
// caller has zeroed. ptrSize is the writer's pointer size (4 or 8).
func decodeTCPIP(id uint16, ptrSize int, payload []byte, ev *tracer.Event) error {
	ev.Proto = tracer.ProtoTCP
	switch id {
	case idTCPTcbStateChange:
		return decodeTcbStateChange(payload, ptrSize, ev)
	case idTCPAcceptListenerComplete:
		ev.Kind = tracer.KindAccept
		return decodeTcbCompletion(payload, ptrSize, ev)
	case idTCPConnectTcbComplete:
		ev.Kind = tracer.KindConnect
		return decodeTcbCompletion(payload, ptrSize, ev)
	case idTCPCloseTcbRequest, idTCPAbortTcbRequest, idTCPAbortTcbComplete,
		idTCPDisconnectTcbComplete, idTCPShutdownTcb, idTCPDisconnectTcbFinWait2Timeout:
		ev.Kind = kindEndpoints
		return decodeTcbCompletion(payload, ptrSize, ev)
	case idTCPRequestConnect:
		ev.Kind = kindEndpoints
		return decodeRequestConnect(payload, ptrSize, ev)
	case idTCPConnectionRundown:
		ev.Kind = kindEndpoints
		return decodeConnectionRundown(payload, ptrSize, ev)
	}
	return errUnknownEvent
}

// decodeTcbStateChange decodes 1051 TcpTcbStateChange: u32 OldState,
// u32 NewState, u32 SndNxt, pointer Tcb. It names no address and no
// process.
func decodeTcbStateChange(payload []byte, ptrSize int, ev *tracer.Event) error {
	r := payloadReader{b: payload}
	oldState := r.u32()
	newState := r.u32()
	r.u32() // SndNxt
	ev.Sock = tracer.SockID(r.pointer(ptrSize))
	if r.err != nil {
		return r.err
	}
	var err error
	if ev.OldState, err = etwState(oldState); err != nil {
		return err
	}
	if ev.NewState, err = etwState(newState); err != nil {
		return err
	}
	ev.Kind = tracer.KindState
	return nil
}

// decodeTcbCompletion decodes the template shared by 1017, 1033, 1038-1040,
// 1043, 1044 and 1201: local and remote length-prefixed SOCKADDRs, u32
// Status, u32 ProcessId, u32 Compartment, pointer Tcb, and from version 1 a
// u64 ProcessStartKey that is not needed.
func decodeTcbCompletion(payload []byte, ptrSize int, ev *tracer.Event) error {
	r := payloadReader{b: payload}
	r.endpoints(ev)
	r.u32() // Status
	ev.PID = r.u32()
	r.u32() // Compartment
	ev.Sock = tracer.SockID(r.pointer(ptrSize))
	return r.err
}

// decodeTcbEndpoints decodes the prefix that 1002 TcpRequestConnect and
// 1300 TcpConnectionRundown share: pointer Tcb, local and remote
// length-prefixed SOCKADDRs, u32 state.
func decodeTcbEndpoints(r *payloadReader, ptrSize int, ev *tracer.Event) uint32 {
	ev.Sock = tracer.SockID(r.pointer(ptrSize))
	r.endpoints(ev)
	return r.u32()
}

// decodeRequestConnect decodes 1002 TcpRequestConnect, which names the
// endpoints of an active open before its first state change, so the Tcb is
// still CLOSED. Its own state field (its meaning is not documented) and
// the trailing u32 RexmitCount are not needed.
func decodeRequestConnect(payload []byte, ptrSize int, ev *tracer.Event) error {
	r := payloadReader{b: payload}
	decodeTcbEndpoints(&r, ptrSize, ev)
	ev.NewState = tracer.StateClose
	return r.err
}

// decodeConnectionRundown decodes 1300 TcpConnectionRundown, which
// describes a connection that existed before the session: the prefix of
// decodeTcbEndpoints followed by u32 Pid.
func decodeConnectionRundown(payload []byte, ptrSize int, ev *tracer.Event) error {
	r := payloadReader{b: payload}
	state := decodeTcbEndpoints(&r, ptrSize, ev)
	ev.PID = r.u32()
	if r.err != nil {
		return r.err
	}
	var err error
	ev.NewState, err = etwState(state)
	return err
}

// pointerSize says how wide the pointers in an event are, from its
// EVENT_HEADER flags. Without either flag the writer matched us: porttrace
// only consumes ETW in 64-bit builds.
func pointerSize(headerFlags uint16) int {
	const flag32BitHeader = 0x0020
	if headerFlags&flag32BitHeader != 0 {
		return 4
	}
	return 8
}

// filetimeEpochDelta is the number of 100 ns intervals between 1601-01-01,
// where FILETIME counts from, and the Unix epoch.
const filetimeEpochDelta = 116444736000000000

// filetimeToUnixNs converts an event time stamp, which ProcessTrace hands
// over as FILETIME, to nanoseconds since the Unix epoch.
func filetimeToUnixNs(ft int64) int64 {
	return (ft - filetimeEpochDelta) * 100
}
