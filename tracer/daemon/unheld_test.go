package daemon

import (
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// TestUnheldPorts: the ports of a snapshot's TCP sockets no process holds
// are remembered, both ends, in their namespace; those of listeners, held
// and UDP sockets are not; a port forgotten is gone; a new snapshot
// replaces the old.
func TestUnheldPorts(t *testing.T) {
	ap := netip.MustParseAddrPort
	r := &snapshot.PortReport{Sockets: []snapshot.PortSocket{
		{Proto: tracer.ProtoTCP, State: tracer.StateTimeWait, Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:40000"), NetNS: 1},
		{Proto: tracer.ProtoTCP, State: tracer.StateFinWait2, Local: ap("127.0.0.1:41000"), Remote: ap("127.0.0.1:9090"), NetNS: 2, Inode: 7},
		{Proto: tracer.ProtoTCP, State: tracer.StateEstablished, Local: ap("127.0.0.1:7070"), Remote: ap("127.0.0.1:42000"), NetNS: 1, PIDs: []uint32{5}},
		{Proto: tracer.ProtoTCP, State: tracer.StateListen, Local: ap("127.0.0.1:6060"), Remote: ap("0.0.0.0:0"), NetNS: 1},
		{Proto: tracer.ProtoUDP, State: tracer.StateClose, Local: ap("127.0.0.1:5050"), Remote: ap("0.0.0.0:0"), NetNS: 1},
	}}
	var u unheldPorts
	if u.has(1, 8080) {
		t.Error("a port remembered before any snapshot")
	}
	u.remember(r)
	for _, c := range []struct {
		netns uint32
		port  uint16
		want  bool
	}{
		{1, 8080, true}, {1, 40000, true}, {2, 9090, true}, {2, 41000, true},
		{2, 8080, false}, {1, 9090, false}, {1, 7070, false}, {1, 42000, false}, {1, 6060, false}, {1, 5050, false}, {1, 0, false},
	} {
		if got := u.has(c.netns, c.port); got != c.want {
			t.Errorf("namespace %d port %d: %v, want %v", c.netns, c.port, got, c.want)
		}
	}
	u.forget(1, 8080)
	if u.has(1, 8080) || !u.has(1, 40000) {
		t.Error("forgetting 8080 did not forget it alone")
	}
	u.remember(&snapshot.PortReport{})
	if u.has(1, 40000) || u.has(2, 9090) {
		t.Error("an empty snapshot left ports remembered")
	}
}
