package windows

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

// port appends a DWORD port field: network order in the first two bytes.
func (p payload) port(v uint16) payload { return p.u16be(v).u16be(0) }

func (p payload) addr(s string) payload {
	return p.raw(netip.MustParseAddr(s).AsSlice())
}

func tcp4Row(state uint32, local string, lport uint16, remote string, rport uint16, pid uint32) payload {
	return payload{}.u32(state).addr(local).port(lport).addr(remote).port(rport).u32(pid)
}

func tcp6Row(local string, lport uint16, remote string, rport uint16, state, pid uint32) payload {
	return payload{}.addr(local).u32(3).port(lport).addr(remote).u32(0).port(rport).u32(state).u32(pid)
}

func table(rows ...payload) payload {
	p := payload{}.u32(uint32(len(rows)))
	for _, r := range rows {
		p = p.raw(r)
	}
	return p
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestMIBTCPState(t *testing.T) {
	for v := uint32(1); v <= 11; v++ {
		want, _ := etwState(v - 1)
		if got, err := mibTCPState(v); got != want || err != nil {
			t.Errorf("mibTCPState(%d) = %v, %v; want %v", v, got, err, want)
		}
	}
	if got, _ := mibTCPState(11); got != tracer.StateTimeWait {
		t.Errorf("MIB_TCP_STATE 11 = %v, want TIME_WAIT", got)
	}
	if got, _ := mibTCPState(mibStateDeleteTCB); got != tracer.StateClose {
		t.Errorf("DELETE_TCB = %v, want CLOSE", got)
	}
	for _, v := range []uint32{0, 13, 0xffffffff} {
		if _, err := mibTCPState(v); !errors.Is(err, errMIBState) {
			t.Errorf("mibTCPState(%d) err = %v", v, err)
		}
	}
}

func TestDecodeTable(t *testing.T) {
	tests := []struct {
		name   string
		proto  tracer.Proto
		family tracer.Family
		in     []byte
		want   []Row
	}{
		{
			"tcp4 listener and time_wait", tracer.ProtoTCP, tracer.FamilyIPv4,
			table(
				tcp4Row(2, "0.0.0.0", 8080, "0.0.0.0", 0, 1234),
				tcp4Row(11, "127.0.0.1", 8080, "127.0.0.1", 51000, 0),
			),
			[]Row{
				{tracer.ProtoTCP, tracer.FamilyIPv4, ap("0.0.0.0:8080"), ap("0.0.0.0:0"), tracer.StateListen, 1234},
				{tracer.ProtoTCP, tracer.FamilyIPv4, ap("127.0.0.1:8080"), ap("127.0.0.1:51000"), tracer.StateTimeWait, 0},
			},
		},
		{
			"tcp6 established", tracer.ProtoTCP, tracer.FamilyIPv6,
			table(tcp6Row("2001:db8::1", 443, "2001:db8::2", 60000, 5, 4)),
			[]Row{{tracer.ProtoTCP, tracer.FamilyIPv6, ap("[2001:db8::1]:443"), ap("[2001:db8::2]:60000"), tracer.StateEstablished, 4}},
		},
		{
			"udp4", tracer.ProtoUDP, tracer.FamilyIPv4,
			table(payload{}.addr("0.0.0.0").port(53).u32(900)),
			[]Row{{Proto: tracer.ProtoUDP, Family: tracer.FamilyIPv4, Local: ap("0.0.0.0:53"), PID: 900}},
		},
		{
			"udp6", tracer.ProtoUDP, tracer.FamilyIPv6,
			table(payload{}.addr("::").u32(0).port(5353).u32(901)),
			[]Row{{Proto: tracer.ProtoUDP, Family: tracer.FamilyIPv6, Local: ap("[::]:5353"), PID: 901}},
		},
		{"empty table", tracer.ProtoTCP, tracer.FamilyIPv4, table(), nil},
		{"buffer larger than the rows", tracer.ProtoUDP, tracer.FamilyIPv4, table().raw(make([]byte, 100)), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeTable(tt.in, tt.proto, tt.family, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestDecodeTableErrors(t *testing.T) {
	row := tcp4Row(5, "10.0.0.1", 1, "10.0.0.2", 2, 3)
	tests := []struct {
		name   string
		proto  tracer.Proto
		family tracer.Family
		in     []byte
		err    error
	}{
		{"no count", tracer.ProtoTCP, tracer.FamilyIPv4, []byte{1, 0}, errTruncated},
		{"count past buffer", tracer.ProtoTCP, tracer.FamilyIPv4, payload{}.u32(2).raw(row), errTruncated},
		{"huge count", tracer.ProtoTCP, tracer.FamilyIPv6, payload{}.u32(0xffffffff), errTruncated},
		{"row cut short", tracer.ProtoTCP, tracer.FamilyIPv4, table(row)[:27], errTruncated},
		{"state 0", tracer.ProtoTCP, tracer.FamilyIPv4, table(tcp4Row(0, "10.0.0.1", 1, "10.0.0.2", 2, 3)), errMIBState},
		{"no layout", tracer.Proto(1), tracer.FamilyIPv4, table(), errTableKind},
		{"no family", tracer.ProtoUDP, 0, table(), errTableKind},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeTable(tt.in, tt.proto, tt.family, nil); !errors.Is(err, tt.err) {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
		})
	}
}
