package windows

import (
	"slices"
	"testing"

	"github.com/porttrace/porttrace/tracer"
)

func TestPortSocketsBothSides(t *testing.T) {
	rows := []Row{
		{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: ap("0.0.0.0:8080"), Remote: ap("0.0.0.0:0"), PID: 10},
		{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:50000"), PID: 10},
		{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, Local: ap("127.0.0.1:50000"), Remote: ap("127.0.0.1:8080"), PID: 20},
		{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait, Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:50001")},
		{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: ap("0.0.0.0:9090"), Remote: ap("0.0.0.0:0"), PID: 30},
		{Proto: tracer.ProtoUDP, Family: tracer.FamilyIPv6, Local: ap("[::]:8080"), PID: 40},
	}
	got := portSockets(rows, 8080)
	if len(got) != 5 {
		t.Fatalf("%d sockets, want 5 (the listener on 9090 left out): %+v", len(got), got)
	}
	for i, want := range []struct {
		row  int
		pids []uint32
	}{{0, []uint32{10}}, {1, []uint32{10}}, {2, []uint32{20}}, {3, nil}, {5, []uint32{40}}} {
		row := rows[want.row]
		if s := got[i]; s.Local != row.Local || s.Remote != row.Remote || s.State != row.State || s.Proto != row.Proto || !slices.Equal(s.PIDs, want.pids) {
			t.Errorf("socket %d: %+v, want row %d with pids %v", i, s, want.row, want.pids)
		}
		if got[i].FDs != nil {
			t.Errorf("socket %d: descriptors %v from a table that has none", i, got[i].FDs)
		}
	}
}

func TestPortSocketsEveryPort(t *testing.T) {
	rows := []Row{
		{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: ap("0.0.0.0:8080"), Remote: ap("0.0.0.0:0"), PID: 10},
		{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: ap("0.0.0.0:9090"), Remote: ap("0.0.0.0:0"), PID: 30},
	}
	if got := portSockets(rows, 0); len(got) != len(rows) {
		t.Fatalf("%d sockets for port 0, want every row (%d): %+v", len(got), len(rows), got)
	}
}
