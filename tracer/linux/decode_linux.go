package linux

import (
	"github.com/porttrace/porttrace/tracer"

	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Layout of struct event in bpf/porttrace.bpf.c. TestDecoderMatchesCLayout
// checks these against the Go type bpf2go generates from the C.
const (
	offTime     = 0
	offSock     = 8
	offTimeout  = 16
	offSAddr    = 24
	offDAddr    = 40
	offPID      = 56
	offNetNS    = 60
	offErr      = 64
	offSPort    = 68
	offDPort    = 70
	offFamily   = 72
	offProto    = 74
	offKind     = 76
	offOldState = 77
	offNewState = 78
	offComm     = 80
	eventSize   = 96
)

var (
	errShortEvent = errors.New("short event")
	errBadKind    = errors.New("unknown event kind")
	errBadFamily  = errors.New("unknown address family")
	errBadState   = errors.New("unknown tcp state")
)

// decodeEvent fills ev from one ring buffer record. monoToWallNs converts
// the kernel's CLOCK_MONOTONIC stamp to wall-clock time. It allocates
// nothing: errors are preallocated.
func decodeEvent(raw []byte, monoToWallNs int64, ev *tracer.Event) error {
	if len(raw) < eventSize {
		return errShortEvent
	}
	ne := binary.NativeEndian
	kind := tracer.Kind(raw[offKind])
	if kind < tracer.KindState || kind > tracer.KindTimeWaitExpire {
		return errBadKind
	}
	old, new := tracer.State(raw[offOldState]), tracer.State(raw[offNewState])
	if old >= tracer.StateCount || new >= tracer.StateCount {
		return errBadState
	}
	switch ne.Uint16(raw[offFamily:]) {
	case unix.AF_INET:
		ev.Family = tracer.FamilyIPv4
		ev.SAddr = netip.AddrFrom4([4]byte(raw[offSAddr:]))
		ev.DAddr = netip.AddrFrom4([4]byte(raw[offDAddr:]))
	case unix.AF_INET6:
		ev.Family = tracer.FamilyIPv6
		ev.SAddr = netip.AddrFrom16([16]byte(raw[offSAddr:]))
		ev.DAddr = netip.AddrFrom16([16]byte(raw[offDAddr:]))
	default:
		return errBadFamily
	}
	ev.TimeNs = int64(ne.Uint64(raw[offTime:])) + monoToWallNs
	ev.Kind = kind
	ev.Proto = tracer.Proto(ne.Uint16(raw[offProto:]))
	ev.OldState, ev.NewState = old, new
	ev.Sock = tracer.SockID(ne.Uint64(raw[offSock:]))
	ev.TimeoutNs = int64(ne.Uint64(raw[offTimeout:]))
	ev.SPort = ne.Uint16(raw[offSPort:])
	ev.DPort = ne.Uint16(raw[offDPort:])
	ev.PID = ne.Uint32(raw[offPID:])
	ev.NetNS = ne.Uint32(raw[offNetNS:])
	ev.Err = int32(ne.Uint32(raw[offErr:]))
	copy(ev.Comm[:], raw[offComm:offComm+tracer.CommLen])
	return nil
}
