package tracer

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connectionRecords is one loopback connection as the ring buffer delivers
// it: 10 state transitions over the two sockets, an accept, and the
// timewait socket's start and handover.
func connectionRecords(sockBase uint64, clientPort uint16) [][]byte {
	type spec struct {
		kind      Kind
		sock      uint64
		sport     uint16
		dport     uint16
		old, new  State
		timeoutNs int64
	}
	const server = 8080
	client, passive, tw := sockBase, sockBase+1, sockBase+2
	specs := []spec{
		{KindState, client, clientPort, server, StateClose, StateSynSent, 0},
		{KindState, passive, server, clientPort, StateListen, StateSynRecv, 0},
		{KindState, passive, server, clientPort, StateSynRecv, StateEstablished, 0},
		{KindState, client, clientPort, server, StateSynSent, StateEstablished, 0},
		{KindAccept, passive, server, clientPort, 0, StateEstablished, 0},
		{KindState, client, clientPort, server, StateEstablished, StateFinWait1, 0},
		{KindState, passive, server, clientPort, StateEstablished, StateCloseWait, 0},
		{KindState, client, clientPort, server, StateFinWait1, StateFinWait2, 0},
		{KindState, passive, server, clientPort, StateCloseWait, StateLastAck, 0},
		{KindTimeWaitStart, tw, clientPort, server, 0, StateTimeWait, 60e9},
		{KindState, client, clientPort, server, StateFinWait2, StateClose, 0},
		{KindState, passive, server, clientPort, StateLastAck, StateClose, 0},
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
		ne.PutUint16(b[offProto:], uint16(ProtoTCP))
		b[offKind], b[offOldState], b[offNewState] = byte(s.kind), byte(s.old), byte(s.new)
		copy(b[offComm:], "bench")
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
	c := NewCorrelator(func(*Record) {})
	var ev Event
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

// BenchmarkFormat measures turning a record into a line.
func BenchmarkFormat(b *testing.B) {
	recs := sampleRecords()
	buf := make([]byte, 0, 512)
	for _, tc := range []struct {
		name string
		fn   func(*Record)
	}{
		{"text", func(r *Record) { buf = AppendText(buf[:0], r, time.Local, false) }},
		{"json", func(r *Record) { buf = AppendJSON(buf[:0], r) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				tc.fn(&recs[i%len(recs)])
			}
		})
	}
}
