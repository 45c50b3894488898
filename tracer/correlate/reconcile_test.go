package correlate

import (
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// TestReconcile: after lost events, a fresh snapshot adopts the sockets the
// table missed, names owners it did not know, and drops a connection whose
// close was lost, while a listener it lists and a TIME_WAIT it cannot list
// stay.
func TestReconcile(t *testing.T) {
	c := NewCorrelator(func(*tracer.Record) {})
	for _, e := range handshake() {
		c.Handle(&e)
	}
	lost := state(20, atClient, 0x9000, tracer.StateClose, tracer.StateSynSent, client)
	lost.SPort, lost.DPort = 41000, 8080
	c.Handle(&lost)
	established := state(21, atClient, 0x9000, tracer.StateSynSent, tracer.StateEstablished, softirq)
	established.SPort, established.DPort = 41000, 8080
	c.Handle(&established)
	tw := timewait(30, tracer.KindTimeWaitStart, tracer.StateTimeWait, 60_000)
	c.Handle(&tw)

	adopted := tracer.SockID(0xa000)
	r := &snapshot.PortReport{
		Sockets: []snapshot.PortSocket{
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: netip.AddrPortFrom(serverAddr, 8080),
				Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), NetNS: 1, Sock: listenSock, PIDs: []uint32{listener}},
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, Local: netip.AddrPortFrom(serverAddr, 8080),
				Remote: netip.AddrPortFrom(clientAddr, 40000), NetNS: 1, Sock: serverSock, PIDs: []uint32{worker}},
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, Local: netip.AddrPortFrom(serverAddr, 9090),
				Remote: netip.AddrPortFrom(clientAddr, 40001), NetNS: 1, Sock: adopted, PIDs: []uint32{worker}},
		},
		Processes: map[uint32]*proc.Process{
			listener: {Identity: proc.Identity{PID: listener}, Name: "p100"},
			worker:   {Identity: proc.Identity{PID: worker}, Name: "p200"},
		},
	}
	c.Reconcile(r, 1000*1e6)
	if _, ok := c.byID[0x9000]; ok {
		t.Error("a connection no process holds any more is still tracked")
	}
	for _, id := range []tracer.SockID{listenSock, serverSock, adopted, twSock} {
		if _, ok := c.byID[id]; !ok {
			t.Errorf("socket %#x dropped", id)
		}
	}
	if s := &c.socks[c.byID[serverSock]]; s.owner.PID != worker || s.ownerVia != tracer.OwnerSnapshot {
		t.Errorf("the passive socket's owner: %d via %s, want %d via snapshot", s.owner.PID, s.ownerVia, worker)
	}
	if s := &c.socks[c.byID[adopted]]; s.owner.PID != worker {
		t.Errorf("the adopted socket's owner: %d, want %d", s.owner.PID, worker)
	}
}
