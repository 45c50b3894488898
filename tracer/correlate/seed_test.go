package correlate

import (
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// BenchmarkSeedTimeWait: a watch starts on a stormed port beside the
// TIME_WAIT sockets of the connections before it (the storm section of
// make bench meets 14,000), takes them from its snapshot, prints their
// lines and then follows each one's kill by a new connection at its ends.
// Per socket found.
func BenchmarkSeedTimeWait(b *testing.B) {
	const sockets = 14_000
	found := make([]snapshot.PortSocket, sockets)
	kills := make([]tracer.Event, sockets)
	for i := range found {
		port := uint16(20_000 + i)
		found[i] = snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: tracer.StateTimeWait,
			Local: netip.AddrPortFrom(clientAddr, port), Remote: netip.AddrPortFrom(serverAddr, 8080), NetNS: 1,
			Timer: snapshot.TimerTimeWait, TimerNs: 30e9}
		kills[i] = fromClientPort(timewait(200, tracer.KindTimeWaitCancel, tracer.StateTimeWait, 0), port)
		kills[i].Sock = tracer.SockID(0x10_0000 + i*0x100)
		kills[i].NetNS = 1
	}
	b.ReportAllocs()
	for b.Loop() {
		var lines int
		c := NewCorrelator(func(*tracer.Record) { lines++ })
		r := &snapshot.PortReport{Port: 8080, Sockets: found}
		c.Seed(r, 100e6)
		c.Tick(101e6)
		for i := range kills {
			c.Handle(&kills[i])
		}
		c.Tick(10e9)
		if lines != 2*sockets {
			b.Fatalf("%d lines, want %d: one at the start and one at the end of each", lines, 2*sockets)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*sockets), "ns/socket")
}
