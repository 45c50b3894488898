package correlate

import (
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// TestReconcile: after lost events, a fresh snapshot adopts the sockets the
// table missed, names owners it did not know, drops a connection whose
// close was lost and a closing socket whose end was, and replaces a socket
// whose address the kernel reused unseen; a listener it lists, a TIME_WAIT
// it lists by its ends and a socket changed since it was taken stay.
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
	const (
		orphan  tracer.SockID = 0xb000 // closed in FIN_WAIT2; its end lost
		reused  tracer.SockID = 0xc000 // a listener, closed and its address reused unseen
		changed tracer.SockID = 0xd000 // a listener born after the snapshot
	)
	for _, e := range []tracer.Event{
		state(40, atClient, orphan, tracer.StateEstablished, tracer.StateFinWait1, client),
		state(41, atClient, orphan, tracer.StateFinWait1, tracer.StateFinWait2, softirq),
		state(42, atListener, reused, tracer.StateClose, tracer.StateListen, listener),
		state(1500, atListener, changed, tracer.StateClose, tracer.StateListen, listener),
	} {
		e.SPort = uint16(e.Sock >> 4)
		c.Handle(&e)
	}

	adopted := tracer.SockID(0xa000)
	local := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(serverAddr, port) }
	anyRemote := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	r := &snapshot.PortReport{
		Sockets: []snapshot.PortSocket{
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: local(8080),
				Remote: anyRemote, NetNS: 1, Sock: listenSock, PIDs: []uint32{listener}},
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, Local: local(8080),
				Remote: netip.AddrPortFrom(clientAddr, 40000), NetNS: 1, Sock: serverSock, PIDs: []uint32{worker}},
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateEstablished, Local: local(9090),
				Remote: netip.AddrPortFrom(clientAddr, 40001), NetNS: 1, Sock: adopted, PIDs: []uint32{worker}},
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait, Local: netip.AddrPortFrom(clientAddr, 40000),
				Remote: local(8080), NetNS: 1},
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: local(7070),
				Remote: anyRemote, NetNS: 1, Sock: reused, PIDs: []uint32{worker}},
		},
		Processes: map[uint32]*proc.Process{
			listener: {Identity: proc.Identity{PID: listener}, Name: "p100"},
			worker:   {Identity: proc.Identity{PID: worker}, Name: "p200"},
		},
	}
	c.Reconcile(r, 1000*1e6)
	for _, id := range []tracer.SockID{0x9000, orphan} {
		if _, ok := c.byID[id]; ok {
			t.Errorf("socket %#x, gone, is still tracked", id)
		}
	}
	for _, id := range []tracer.SockID{listenSock, serverSock, adopted, twSock, reused, changed} {
		if _, ok := c.byID[id]; !ok {
			t.Errorf("socket %#x dropped", id)
		}
	}
	if s := c.socks.at(c.byID[serverSock]); s.owner.PID != worker || s.ownerVia != tracer.OwnerSnapshot {
		t.Errorf("the passive socket's owner: %d via %s, want %d via snapshot", s.owner.PID, s.ownerVia, worker)
	}
	if s := c.socks.at(c.byID[adopted]); s.owner.PID != worker {
		t.Errorf("the adopted socket's owner: %d, want %d", s.owner.PID, worker)
	}
	if s := c.socks.at(c.byID[reused]); s.owner.PID != worker || s.sport != 7070 {
		t.Errorf("the reused address: port %d owned by %d, want the snapshot's 7070 owned by %d", s.sport, s.owner.PID, worker)
	}
	if s := c.socks.at(c.byID[listenSock]); s.ownerVia != tracer.OwnerListen {
		t.Errorf("the listener, held by its owner, was replaced: owner via %s", s.ownerVia)
	}
}

// TestReconcileKeepsMPTCPSubflows: the snapshot lists an MPTCP listener by
// its MPTCP socket; the events follow its TCP subflow under another id. A
// reconcile must not take the subflow for a listener whose close was lost.
func TestReconcileKeepsMPTCPSubflows(t *testing.T) {
	c := NewCorrelator(func(*tracer.Record) {})
	listen := state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener)
	c.Handle(&listen)
	r := &snapshot.PortReport{
		Sockets: []snapshot.PortSocket{{Proto: tracer.ProtoMPTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen,
			Local: netip.AddrPortFrom(serverAddr, 8080), Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), NetNS: 1,
			Sock: 0xbeef, PIDs: []uint32{listener}}},
		Processes: map[uint32]*proc.Process{listener: {Identity: proc.Identity{PID: listener}, Name: "p100"}},
	}
	c.Reconcile(r, 1000*1e6)
	if _, ok := c.byID[listenSock]; !ok {
		t.Error("the MPTCP listener's subflow was forgotten")
	}
}

// TestReconcileForgetsReplacedListener: a listener closed unseen, and
// another process's opened on its address, is forgotten: the snapshot
// lists only the new one, at the same ends, held by another process. (Kept,
// it would stand beside the new listener and make the daemon's who doubt
// its cache.)
func TestReconcileForgetsReplacedListener(t *testing.T) {
	c := NewCorrelator(func(*tracer.Record) {})
	listen := state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener)
	c.Handle(&listen)
	const replacement tracer.SockID = 0xbeef
	r := &snapshot.PortReport{
		Sockets: []snapshot.PortSocket{{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen,
			Local: netip.AddrPortFrom(serverAddr, 8080), Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), NetNS: 1,
			Sock: replacement, PIDs: []uint32{worker}}},
		Processes: map[uint32]*proc.Process{worker: {Identity: proc.Identity{PID: worker}, Name: "p200"}},
	}
	c.Reconcile(r, 1000*1e6)
	if _, ok := c.byID[listenSock]; ok {
		t.Error("the replaced listener is still tracked")
	}
	if i, ok := c.byID[replacement]; !ok || c.socks.at(i).owner.PID != worker {
		t.Error("the new listener was not adopted with its owner")
	}
}

// TestReconcileKnowsOwnersToTheTick: the events know an owner's start to
// the nanosecond, a snapshot (from /proc) to the clock tick. A listener
// its owner still holds keeps the owner the events named, and an MPTCP
// subflow its owner holds is not forgotten.
func TestReconcileKnowsOwnersToTheTick(t *testing.T) {
	c := NewCorrelator(func(*tracer.Record) {})
	const startNs uint64 = 1_234_567_891 // not on a tick
	listen := state(0, atListener, listenSock, tracer.StateClose, tracer.StateListen, listener)
	listen.StartNs = startNs
	c.Handle(&listen)
	const subflow tracer.SockID = 0xd000
	mptcp := state(1, atListener, subflow, tracer.StateClose, tracer.StateListen, listener)
	mptcp.StartNs, mptcp.SPort = startNs, 9090
	c.Handle(&mptcp)
	anyRemote := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	r := &snapshot.PortReport{
		Sockets: []snapshot.PortSocket{
			{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: netip.AddrPortFrom(serverAddr, 8080),
				Remote: anyRemote, NetNS: 1, Sock: listenSock, PIDs: []uint32{listener}},
			{Proto: tracer.ProtoMPTCP, Family: tracer.FamilyIPv4, State: tracer.StateListen, Local: netip.AddrPortFrom(serverAddr, 9090),
				Remote: anyRemote, NetNS: 1, Sock: 0xbeef, PIDs: []uint32{listener}},
		},
		Processes: map[uint32]*proc.Process{listener: {Identity: proc.Identity{PID: listener, StartNs: startNs / 1e7 * 1e7}, Name: "p100"}},
	}
	c.Reconcile(r, 1000*1e6)
	if i, ok := c.byID[listenSock]; !ok || c.socks.at(i).ownerVia != tracer.OwnerListen {
		t.Error("the listener its owner holds was replaced by the snapshot's")
	}
	if _, ok := c.byID[subflow]; !ok {
		t.Error("the MPTCP subflow its owner holds was forgotten")
	}
}
