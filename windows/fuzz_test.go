package windows

import (
	"encoding/binary"
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

// Fuzz targets for every decoder of bytes that come from outside: ETW
// payloads and iphlpapi tables. They check that no input panics and that
// whatever decodes without error is self-consistent.

func checkAddrFamily(t *testing.T, ev *tracer.Event) {
	t.Helper()
	switch ev.Family {
	case tracer.FamilyIPv4:
		if !ev.SAddr.Is4() || !ev.DAddr.Is4() {
			t.Fatalf("ipv4 event with addresses %v, %v", ev.SAddr, ev.DAddr)
		}
	case tracer.FamilyIPv6:
		if !ev.SAddr.Is6() || !ev.DAddr.Is6() {
			t.Fatalf("ipv6 event with addresses %v, %v", ev.SAddr, ev.DAddr)
		}
	default:
		t.Fatalf("decoded endpoints with family %d", ev.Family)
	}
}

func FuzzDecodeSockaddr(f *testing.F) {
	f.Add(sockaddrIn("192.0.2.1", 8080))
	f.Add(sockaddrIn6("2001:db8::1", 443))
	f.Add([]byte{23, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		addr, _, family, err := decodeSockaddr(b)
		if err != nil {
			return
		}
		switch {
		case family == tracer.FamilyIPv4 && addr.Is4() && len(b) >= sockaddrInLen:
		case family == tracer.FamilyIPv6 && addr.Is6() && len(b) >= sockaddrIn6Len:
		default:
			t.Fatalf("%d bytes decoded as %v family %v", len(b), addr, family)
		}
	})
}

func FuzzDecodeTCPIP(f *testing.F) {
	local4, remote4 := sockaddrIn("10.0.0.1", 8080), sockaddrIn("10.0.0.2", 50000)
	local6, remote6 := sockaddrIn6("2001:db8::1", 8080), sockaddrIn6("2001:db8::2", 50000)
	f.Add(uint16(idTCPTcbStateChange), uint8(8), stateChange(4, 5, 8))
	f.Add(uint16(idTCPTcbStateChange), uint8(4), stateChange(0, 2, 4))
	f.Add(uint16(idTCPAcceptListenerComplete), uint8(8), completion(local4, remote4, 1, 8, 0))
	f.Add(uint16(idTCPConnectTcbComplete), uint8(8), completion(local6, remote6, 1, 8, 1))
	f.Add(uint16(idTCPConnectTcbComplete), uint8(4), completion(local4, remote4, 1, 4, 1))
	f.Add(uint16(idTCPCloseTcbRequest), uint8(8), completion(local4, remote6, 1, 8, 1))
	f.Add(uint16(idTCPRequestConnect), uint8(8), requestConnect(local6, remote6))
	f.Add(uint16(idTCPConnectionRundown), uint8(8), rundown(local4, remote4, 4, 1))
	f.Fuzz(func(t *testing.T, id uint16, ptrSize uint8, b []byte) {
		var ev tracer.Event
		if err := decodeTCPIP(id, int(ptrSize), b, &ev); err != nil {
			return
		}
		if ptrSize != 4 && ptrSize != 8 {
			t.Fatalf("decoded with pointer size %d", ptrSize)
		}
		if ev.Proto != tracer.ProtoTCP {
			t.Fatalf("proto %v", ev.Proto)
		}
		switch ev.Kind {
		case tracer.KindState:
			if ev.OldState == tracer.StateUnknown || ev.NewState == tracer.StateUnknown || ev.Family != 0 {
				t.Fatalf("state change %+v", ev)
			}
		case tracer.KindAccept, tracer.KindConnect, kindEndpoints:
			checkAddrFamily(t, &ev)
			if id == idTCPConnectionRundown && ev.NewState == tracer.StateUnknown {
				t.Fatalf("rundown without a state: %+v", ev)
			}
		default:
			t.Fatalf("kind %v", ev.Kind)
		}
	})
}

func FuzzDecodeTable(f *testing.F) {
	f.Add(uint8(0), []byte(table(tcp4Row(2, "0.0.0.0", 8080, "0.0.0.0", 0, 1234))))
	f.Add(uint8(1), []byte(table(tcp6Row("::1", 443, "::1", 60000, 5, 4))))
	f.Add(uint8(2), []byte(table(payload{}.addr("0.0.0.0").port(53).u32(900))))
	f.Add(uint8(3), []byte(table(payload{}.addr("::").u32(0).port(5353).u32(901))))
	kinds := [...]struct {
		proto  tracer.Proto
		family tracer.Family
	}{
		{tracer.ProtoTCP, tracer.FamilyIPv4},
		{tracer.ProtoTCP, tracer.FamilyIPv6},
		{tracer.ProtoUDP, tracer.FamilyIPv4},
		{tracer.ProtoUDP, tracer.FamilyIPv6},
	}
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		k := kinds[int(kind)%len(kinds)]
		rows, err := decodeTable(b, k.proto, k.family, nil)
		if err != nil {
			return
		}
		if count := binary.LittleEndian.Uint32(b); uint64(len(rows)) != uint64(count) {
			t.Fatalf("%d rows from a count of %d", len(rows), count)
		}
		for _, row := range rows {
			is4 := row.Local.Addr().Is4()
			if row.Proto != k.proto || row.Family != k.family || is4 != (k.family == tracer.FamilyIPv4) {
				t.Fatalf("row %+v from a %v %v table", row, k.proto, k.family)
			}
			if k.proto == tracer.ProtoTCP && row.State == tracer.StateUnknown {
				t.Fatalf("tcp row without a state: %+v", row)
			}
			if k.proto == tracer.ProtoUDP && (row.Remote.IsValid() || row.State != tracer.StateUnknown) {
				t.Fatalf("udp row with a remote end or state: %+v", row)
			}
		}
	})
}
