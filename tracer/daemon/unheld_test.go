package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// TestUnheldSockets: a snapshot's TCP sockets no process holds are
// remembered on both their ports, in their namespace; listeners, held and
// UDP sockets are not; forgotten ones are gone from both ports; a new
// snapshot replaces the old.
func TestUnheldSockets(t *testing.T) {
	ap := netip.MustParseAddrPort
	tw := snapshot.PortSocket{Proto: tracer.ProtoTCP, State: tracer.StateTimeWait, Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:40000"), NetNS: 1}
	orphan := snapshot.PortSocket{Proto: tracer.ProtoTCP, State: tracer.StateFinWait2, Local: ap("127.0.0.1:41000"), Remote: ap("127.0.0.1:8080"), NetNS: 1, Inode: 7}
	elsewhere := tw
	elsewhere.NetNS = 2
	r := &snapshot.PortReport{Sockets: []snapshot.PortSocket{tw, orphan, elsewhere,
		{Proto: tracer.ProtoTCP, State: tracer.StateEstablished, Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:42000"), NetNS: 1, PIDs: []uint32{5}},
		{Proto: tracer.ProtoTCP, State: tracer.StateListen, Local: ap("127.0.0.1:8080"), Remote: ap("0.0.0.0:0"), NetNS: 1},
		{Proto: tracer.ProtoUDP, State: tracer.StateClose, Local: ap("127.0.0.1:8080"), Remote: ap("0.0.0.0:0"), NetNS: 1},
	}}
	keyOf := func(s snapshot.PortSocket) snapshot.SocketKey { return snapshot.KeyOf(s.NetNS, s.Local, s.Remote) }
	sorted := func(keys []snapshot.SocketKey) []snapshot.SocketKey {
		slices.SortFunc(keys, func(a, b snapshot.SocketKey) int { return a.Local.Compare(b.Local) })
		return keys
	}
	var u unheldSockets
	u.remember(r)
	if got, want := sorted(u.on(8080, 1)), []snapshot.SocketKey{keyOf(tw), keyOf(orphan)}; !slices.Equal(got, want) {
		t.Errorf("on 8080 in namespace 1: %v, want %v", got, want)
	}
	if got := u.on(40000, 1); !slices.Equal(got, []snapshot.SocketKey{keyOf(tw)}) {
		t.Errorf("on 40000, the other end: %v", got)
	}
	if got := u.on(8080, 2); !slices.Equal(got, []snapshot.SocketKey{keyOf(elsewhere)}) {
		t.Errorf("on 8080 in namespace 2: %v", got)
	}
	u.forget([]snapshot.SocketKey{keyOf(tw)})
	if got := u.on(8080, 1); !slices.Equal(got, []snapshot.SocketKey{keyOf(orphan)}) {
		t.Errorf("after forgetting the TIME_WAIT socket, on 8080: %v", got)
	}
	if got := u.on(40000, 1); len(got) != 0 {
		t.Errorf("after forgetting the TIME_WAIT socket, on 40000: %v", got)
	}
	u.remember(&snapshot.PortReport{})
	if got := u.on(8080, 2); len(got) != 0 {
		t.Errorf("after an empty snapshot: %v", got)
	}
}
