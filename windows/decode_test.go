package windows

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

// payload builds event payloads field by field, as the documented layouts
// describe them.
type payload []byte

func (p payload) u16be(v uint16) payload { return binary.BigEndian.AppendUint16(p, v) }
func (p payload) u32(v uint32) payload   { return binary.LittleEndian.AppendUint32(p, v) }
func (p payload) u64(v uint64) payload   { return binary.LittleEndian.AppendUint64(p, v) }
func (p payload) raw(b []byte) payload   { return append(p, b...) }

func (p payload) pointer(size int, v uint64) payload {
	if size == 4 {
		return p.u32(uint32(v))
	}
	return p.u64(v)
}

// sockaddr appends a u32 length and the SOCKADDR, as the TCPIP provider
// writes addresses.
func (p payload) sockaddr(sa []byte) payload {
	return p.u32(uint32(len(sa))).raw(sa)
}

// sockaddrIn is a SOCKADDR_IN: family 2, port in network order, address,
// 8 bytes of zero.
func sockaddrIn(addr string, port uint16) []byte {
	a := netip.MustParseAddr(addr).As4()
	return payload{}.u16le(afInet).u16be(port).raw(a[:]).raw(make([]byte, 8))
}

// sockaddrIn6 is a SOCKADDR_IN6: family 23, port in network order, flow
// info, address, scope id.
func sockaddrIn6(addr string, port uint16) []byte {
	a := netip.MustParseAddr(addr).As16()
	return payload{}.u16le(afInet6).u16be(port).u32(0).raw(a[:]).u32(7)
}

func (p payload) u16le(v uint16) payload { return binary.LittleEndian.AppendUint16(p, v) }

func TestDecodeSockaddr(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		addr   string
		port   uint16
		family tracer.Family
		err    error
	}{
		{"ipv4", sockaddrIn("192.0.2.1", 8080), "192.0.2.1", 8080, tracer.FamilyIPv4, nil},
		{"ipv6", sockaddrIn6("2001:db8::1", 443), "2001:db8::1", 443, tracer.FamilyIPv6, nil},
		{"ipv4 mapped", sockaddrIn6("::ffff:10.0.0.1", 80), "::ffff:10.0.0.1", 80, tracer.FamilyIPv6, nil},
		{"ipv4 in storage", append(sockaddrIn("10.1.2.3", 1), make([]byte, 112)...), "10.1.2.3", 1, tracer.FamilyIPv4, nil},
		{"empty", nil, "", 0, 0, errSockaddrLength},
		{"one byte", []byte{2}, "", 0, 0, errSockaddrLength},
		{"ipv4 short", sockaddrIn("192.0.2.1", 1)[:15], "", 0, 0, errSockaddrLength},
		{"ipv6 short", sockaddrIn6("::1", 1)[:27], "", 0, 0, errSockaddrLength},
		{"ipv6 family in ipv4 size", payload{}.u16le(afInet6).raw(make([]byte, 14)), "", 0, 0, errSockaddrLength},
		{"unix family", payload{}.u16le(1).raw(make([]byte, 26)), "", 0, 0, errSockaddrFamily},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, port, family, err := decodeSockaddr(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if want := netip.MustParseAddr(tt.addr); addr != want || port != tt.port || family != tt.family {
				t.Errorf("got %v port %d %v, want %v port %d %v", addr, port, family, want, tt.port, tt.family)
			}
		})
	}
}

func TestETWState(t *testing.T) {
	want := []tracer.State{
		tracer.StateClose, tracer.StateListen, tracer.StateSynSent, tracer.StateSynRecv,
		tracer.StateEstablished, tracer.StateFinWait1, tracer.StateFinWait2,
		tracer.StateCloseWait, tracer.StateClosing, tracer.StateLastAck, tracer.StateTimeWait,
	}
	for v, w := range want {
		if got, err := etwState(uint32(v)); got != w || err != nil {
			t.Errorf("etwState(%d) = %v, %v; want %v", v, got, err, w)
		}
	}
	for _, v := range []uint32{11, 12, 0xffffffff} {
		if _, err := etwState(v); !errors.Is(err, errTCPState) {
			t.Errorf("etwState(%d) err = %v, want %v", v, err, errTCPState)
		}
	}
}

const tcb = 0xffffc00012345670

// completion builds the template of 1017, 1033, 1038-1040, 1043, 1044 and
// 1201; version 1 appends ProcessStartKey.
func completion(local, remote []byte, pid uint32, ptrSize, version int) []byte {
	p := payload{}.sockaddr(local).sockaddr(remote).
		u32(0).   // Status
		u32(pid). // ProcessId
		u32(1).   // Compartment
		pointer(ptrSize, tcb)
	if version >= 1 {
		p = p.u64(0x1000000000042) // ProcessStartKey
	}
	return p
}

func stateChange(oldState, newState uint32, ptrSize int) []byte {
	return payload{}.u32(oldState).u32(newState).u32(12345).pointer(ptrSize, tcb)
}

func rundown(local, remote []byte, state, pid uint32) []byte {
	return payload{}.pointer(8, tcb).sockaddr(local).sockaddr(remote).u32(state).u32(pid)
}

func requestConnect(local, remote []byte) []byte {
	return payload{}.pointer(8, tcb).sockaddr(local).sockaddr(remote).u32(2).u32(0)
}

func v4Event(kind tracer.Kind, pid uint32) tracer.Event {
	return tracer.Event{
		Kind: kind, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, Sock: tcb, Process: tracer.Process{PID: pid},
		SAddr: netip.MustParseAddr("10.0.0.1"), SPort: 8080,
		DAddr: netip.MustParseAddr("10.0.0.2"), DPort: 50000,
	}
}

func TestDecodeTCPIP(t *testing.T) {
	local4, remote4 := sockaddrIn("10.0.0.1", 8080), sockaddrIn("10.0.0.2", 50000)
	local6, remote6 := sockaddrIn6("2001:db8::1", 8080), sockaddrIn6("2001:db8::2", 50000)

	accept6 := v4Event(tracer.KindAccept, 4242)
	accept6.Family = tracer.FamilyIPv6
	accept6.SAddr = netip.MustParseAddr("2001:db8::1")
	accept6.DAddr = netip.MustParseAddr("2001:db8::2")

	state := tracer.Event{Kind: tracer.KindState, Proto: tracer.ProtoTCP, Sock: tcb,
		OldState: tracer.StateEstablished, NewState: tracer.StateFinWait1}
	// A 32-bit writer's Tcb is the low half of the one the payload builders use.
	from32Bit := func(ev tracer.Event) tracer.Event {
		ev.Sock &= 0xffffffff
		return ev
	}
	requestEvent := v4Event(kindEndpoints, 0)
	requestEvent.NewState = tracer.StateClose
	rundownEvent := v4Event(kindEndpoints, 77)
	rundownEvent.NewState = tracer.StateEstablished

	tests := []struct {
		name    string
		id      uint16
		ptrSize int
		payload []byte
		want    tracer.Event
		// unused is how many trailing bytes the decoder does not need.
		unused int
	}{
		{"1051 state change", idTCPTcbStateChange, 8, stateChange(4, 5, 8), state, 0},
		{"1051 32-bit writer", idTCPTcbStateChange, 4, stateChange(4, 5, 4), from32Bit(state), 0},
		{"1017 accept v0", idTCPAcceptListenerComplete, 8, completion(local4, remote4, 4242, 8, 0), v4Event(tracer.KindAccept, 4242), 0},
		{"1017 accept v1 ipv6", idTCPAcceptListenerComplete, 8, completion(local6, remote6, 4242, 8, 1), accept6, 8},
		{"1033 connect v1", idTCPConnectTcbComplete, 8, completion(local4, remote4, 99, 8, 1), v4Event(tracer.KindConnect, 99), 8},
		{"1033 connect 32-bit writer", idTCPConnectTcbComplete, 4, completion(local4, remote4, 99, 4, 1), from32Bit(v4Event(tracer.KindConnect, 99)), 8},
		{"1038 close request", idTCPCloseTcbRequest, 8, completion(local4, remote4, 5, 8, 1), v4Event(kindEndpoints, 5), 8},
		{"1039 abort request", idTCPAbortTcbRequest, 8, completion(local4, remote4, 5, 8, 1), v4Event(kindEndpoints, 5), 8},
		{"1040 abort complete", idTCPAbortTcbComplete, 8, completion(local4, remote4, 5, 8, 1), v4Event(kindEndpoints, 5), 8},
		{"1043 disconnect complete", idTCPDisconnectTcbComplete, 8, completion(local4, remote4, 5, 8, 1), v4Event(kindEndpoints, 5), 8},
		{"1044 shutdown", idTCPShutdownTcb, 8, completion(local4, remote4, 5, 8, 1), v4Event(kindEndpoints, 5), 8},
		{"1201 fin_wait2 timeout", idTCPDisconnectTcbFinWait2Timeout, 8, completion(local4, remote4, 5, 8, 0), v4Event(kindEndpoints, 5), 0},
		{"1002 request connect", idTCPRequestConnect, 8, requestConnect(local4, remote4), requestEvent, 4},
		{"1300 rundown", idTCPConnectionRundown, 8, rundown(local4, remote4, 4, 77), rundownEvent, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev tracer.Event
			if err := decodeTCPIP(tt.id, tt.ptrSize, tt.payload, &ev); err != nil {
				t.Fatal(err)
			}
			if ev != tt.want {
				t.Errorf("got  %+v\nwant %+v", ev, tt.want)
			}
			// Every shorter payload is missing a field.
			for n := range len(tt.payload) - tt.unused {
				var ev tracer.Event
				if err := decodeTCPIP(tt.id, tt.ptrSize, tt.payload[:n], &ev); err == nil {
					t.Fatalf("payload cut to %d of %d bytes decoded without error", n, len(tt.payload))
				}
			}
		})
	}
}

func TestDecodeTCPIPErrors(t *testing.T) {
	local4, remote4 := sockaddrIn("10.0.0.1", 8080), sockaddrIn("10.0.0.2", 50000)
	tests := []struct {
		name    string
		id      uint16
		ptrSize int
		payload []byte
		err     error
	}{
		{"unknown id", 1052, 8, stateChange(4, 5, 8), errUnknownEvent},
		{"old state out of range", idTCPTcbStateChange, 8, stateChange(11, 4, 8), errTCPState},
		{"new state out of range", idTCPTcbStateChange, 8, stateChange(4, 0xffffffff, 8), errTCPState},
		{"rundown state out of range", idTCPConnectionRundown, 8, rundown(local4, remote4, 99, 1), errTCPState},
		{"pointer size 2", idTCPTcbStateChange, 2, stateChange(4, 5, 8), errPointerSize},
		{"pointer size 0", idTCPAcceptListenerComplete, 0, completion(local4, remote4, 1, 8, 1), errPointerSize},
		{"family mismatch", idTCPConnectTcbComplete, 8, completion(local4, sockaddrIn6("::1", 1), 1, 8, 1), errFamilyMismatch},
		{"length past payload", idTCPConnectTcbComplete, 8, payload{}.u32(0xfffffff0).raw(local4), errTruncated},
		{"length too small for family", idTCPConnectTcbComplete, 8, completion(local4[:8], remote4, 1, 8, 1), errSockaddrLength},
		{"zero length sockaddr", idTCPConnectTcbComplete, 8, completion(nil, remote4, 1, 8, 1), errSockaddrLength},
		{"bad family", idTCPAcceptListenerComplete, 8, completion(payload{}.u16le(99).raw(make([]byte, 14)), remote4, 1, 8, 1), errSockaddrFamily},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev tracer.Event
			if err := decodeTCPIP(tt.id, tt.ptrSize, tt.payload, &ev); !errors.Is(err, tt.err) {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestPointerSize(t *testing.T) {
	if got := pointerSize(0x0020); got != 4 {
		t.Errorf("32-bit header: %d", got)
	}
	if got := pointerSize(0x0040); got != 8 {
		t.Errorf("64-bit header: %d", got)
	}
	if got := pointerSize(0); got != 8 {
		t.Errorf("no flag: %d", got)
	}
}

func TestFiletimeToUnixNs(t *testing.T) {
	// 2024-01-01T00:00:00.0000001Z: one FILETIME tick past the second.
	const unixSec = 1704067200
	ft := int64(unixSec)*10_000_000 + filetimeEpochDelta + 1
	if got, want := filetimeToUnixNs(ft), int64(unixSec)*1e9+100; got != want {
		t.Errorf("got %d, want %d", got, want)
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	accept := completion(sockaddrIn6("2001:db8::1", 8080), sockaddrIn6("2001:db8::2", 1), 1, 8, 1)
	change := stateChange(4, 5, 8)
	bad := completion(sockaddrIn("10.0.0.1", 1), sockaddrIn6("::1", 1), 1, 8, 1)
	var ev tracer.Event
	allocs := testing.AllocsPerRun(100, func() {
		_ = decodeTCPIP(idTCPAcceptListenerComplete, 8, accept, &ev)
		_ = decodeTCPIP(idTCPTcbStateChange, 8, change, &ev)
		_ = decodeTCPIP(idTCPConnectTcbComplete, 8, bad, &ev)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run", allocs)
	}
}
