package linux

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"

	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// connectionRecords is one loopback connection as the ring buffer delivers
// it: 10 state transitions over the two sockets, an accept, and the
// timewait socket's start and handover.
func connectionRecords(sockBase uint64, clientPort uint16) [][]byte {
	type spec struct {
		kind      tracer.Kind
		sock      uint64
		sport     uint16
		dport     uint16
		old, new  tracer.State
		timeoutNs int64
	}
	const server = 8080
	client, passive, tw := sockBase, sockBase+1, sockBase+2
	specs := []spec{
		{tracer.KindState, client, clientPort, server, tracer.StateClose, tracer.StateSynSent, 0},
		{tracer.KindState, passive, server, clientPort, tracer.StateListen, tracer.StateSynRecv, 0},
		{tracer.KindState, passive, server, clientPort, tracer.StateSynRecv, tracer.StateEstablished, 0},
		{tracer.KindState, client, clientPort, server, tracer.StateSynSent, tracer.StateEstablished, 0},
		{tracer.KindAccept, passive, server, clientPort, 0, tracer.StateEstablished, 0},
		{tracer.KindState, client, clientPort, server, tracer.StateEstablished, tracer.StateFinWait1, 0},
		{tracer.KindState, passive, server, clientPort, tracer.StateEstablished, tracer.StateCloseWait, 0},
		{tracer.KindState, client, clientPort, server, tracer.StateFinWait1, tracer.StateFinWait2, 0},
		{tracer.KindState, passive, server, clientPort, tracer.StateCloseWait, tracer.StateLastAck, 0},
		{tracer.KindTimeWaitStart, tw, clientPort, server, 0, tracer.StateTimeWait, 60e9},
		{tracer.KindState, client, clientPort, server, tracer.StateFinWait2, tracer.StateClose, 0},
		{tracer.KindState, passive, server, clientPort, tracer.StateLastAck, tracer.StateClose, 0},
	}
	ne := binary.NativeEndian
	out := make([][]byte, len(specs))
	lo := netip.MustParseAddr("127.0.0.1").As4()
	for i, s := range specs {
		b := make([]byte, eventSize)
		ne.PutUint64(b[offTime:], uint64(i)*1000)
		ne.PutUint64(b[offSock:], s.sock)
		ne.PutUint64(b[offTimeout:], uint64(s.timeoutNs))
		copy(b[offSAddr:], lo[:])
		copy(b[offDAddr:], lo[:])
		ne.PutUint32(b[offPID:], 4242)
		ne.PutUint16(b[offSPort:], s.sport)
		ne.PutUint16(b[offDPort:], s.dport)
		ne.PutUint16(b[offFamily:], unix.AF_INET)
		ne.PutUint16(b[offProto:], uint16(tracer.ProtoTCP))
		b[offKind], b[offOldState], b[offNewState] = byte(s.kind), byte(s.old), byte(s.new)
		copy(b[offComm:], "bench")
		copy(b[offThread:], "bench-worker")
		out[i] = b
	}
	return out
}

// BenchmarkDecodeCorrelate measures the per-event cost of what porttrace
// does with each ring buffer record before formatting: decode it and
// correlate it. 1024 connections are in flight so the maps are realistic.
func BenchmarkDecodeCorrelate(b *testing.B) {
	const inFlight = 1024
	var conns [][][]byte
	for i := range inFlight {
		conns = append(conns, connectionRecords(uint64(0x10000+i*4), uint16(20000+i)))
	}
	perConn := len(conns[0])
	c := correlate.NewCorrelator(func(*tracer.Record) {})
	var ev tracer.Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		raw := conns[(i/perConn)%inFlight][i%perConn]
		if err := decodeEvent(raw, 0, &ev); err != nil {
			b.Fatal(err)
		}
		c.Handle(&ev)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
