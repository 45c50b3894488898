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
	offTime          = 0
	offSock          = 8
	offTimeout       = 16
	offParent        = 24
	offStart         = 32
	offCgroup        = 40
	offSockCgroup    = 48
	offSAddr         = 56
	offDAddr         = 72
	offPID           = 88
	offNetNS         = 92
	offErr           = 96
	offSPort         = 100
	offDPort         = 102
	offFamily        = 104
	offProto         = 106
	offKind          = 108
	offOldState      = 109
	offNewState      = 110
	offFlags         = 111
	offComm          = 112
	offThread        = 128
	offInode         = 144
	offPPID          = 152
	eventSize        = 160
	flagKernelThread = 1 // EVENT_KTHREAD
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
	if kind < tracer.KindState || kind > tracer.KindExit {
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
		// A process's exit is about no socket.
		if kind != tracer.KindExit {
			return errBadFamily
		}
		ev.Family, ev.SAddr, ev.DAddr = 0, netip.Addr{}, netip.Addr{}
	}
	ev.TimeNs = int64(ne.Uint64(raw[offTime:])) + monoToWallNs
	ev.Kind = kind
	ev.Proto = tracer.Proto(ne.Uint16(raw[offProto:]))
	ev.OldState, ev.NewState = old, new
	ev.Sock = tracer.SockID(ne.Uint64(raw[offSock:]))
	ev.Parent = tracer.SockID(ne.Uint64(raw[offParent:]))
	ev.TimeoutNs = int64(ne.Uint64(raw[offTimeout:]))
	ev.SPort = ne.Uint16(raw[offSPort:])
	ev.DPort = ne.Uint16(raw[offDPort:])
	ev.PID = ne.Uint32(raw[offPID:])
	ev.PPID = ne.Uint32(raw[offPPID:])
	ev.StartNs = ne.Uint64(raw[offStart:])
	ev.CgroupID = ne.Uint64(raw[offCgroup:])
	ev.SockCgroupID = ne.Uint64(raw[offSockCgroup:])
	ev.KernelThread = raw[offFlags]&flagKernelThread != 0
	ev.NetNS = ne.Uint32(raw[offNetNS:])
	ev.Err = int32(ne.Uint32(raw[offErr:]))
	ev.Inode = ne.Uint64(raw[offInode:])
	copy(ev.Comm[:], raw[offComm:offComm+tracer.CommLen])
	copy(ev.Thread[:], raw[offThread:offThread+tracer.CommLen])
	return nil
}
