package history

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/porttrace/porttrace/tracer"
)

// Keys start with the port, big-endian, then a big-endian time, so that
// one port's entries are adjacent and in time order: a query by port and
// time is one seek and a short forward scan, and retention finds each
// port's oldest entries at the front of its range.
const (
	portLen = 2
	// eventKeyLen: port, time (ns), a sequence number telling apart
	// entries of the same port and nanosecond.
	eventKeyLen = portLen + 8 + 4
	// countKeyLen: port, minute since the Unix epoch.
	countKeyLen = portLen + 4
	// socketPrefixLen: proto, port, family, netns, address (16 bytes).
	socketPrefixLen = 2 + portLen + 1 + 4 + 16
	// protoPortLen is the part of a socket prefix that a connection's end
	// matches a bound socket by (a wildcard bind connects from a specific
	// address).
	protoPortLen = 2 + portLen
)

func appendEventKey(dst []byte, port uint16, timeNs int64, seq uint64) []byte {
	dst = binary.BigEndian.AppendUint16(dst, port)
	dst = binary.BigEndian.AppendUint64(dst, uint64(timeNs))
	return binary.BigEndian.AppendUint32(dst, uint32(seq))
}

func appendCountKey(dst []byte, port uint16, minute int64) []byte {
	dst = binary.BigEndian.AppendUint16(dst, port)
	return binary.BigEndian.AppendUint32(dst, uint32(minute))
}

// keyPort and keyTime read a key's port and its time: nanoseconds in an
// event key, minutes in a count key.
func keyPort(k []byte) uint16 { return binary.BigEndian.Uint16(k) }

func keyTime(k []byte) int64 {
	if len(k) == countKeyLen {
		return int64(binary.BigEndian.Uint32(k[portLen:]))
	}
	return int64(binary.BigEndian.Uint64(k[portLen:]))
}

// appendSocketPrefix keys the open-holder index by socket, so that what
// ends or continues a holder finds it with one seek. MPTCP keys as TCP:
// it holds TCP ports, and an MPTCP socket's bind names MPTCP while its
// listen and close, traced on its TCP subflow, name TCP.
func appendSocketPrefix(dst []byte, s *Socket) []byte {
	proto := s.Proto
	if proto == tracer.ProtoMPTCP {
		proto = tracer.ProtoTCP
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(proto))
	dst = binary.BigEndian.AppendUint16(dst, s.Port)
	var family byte
	switch {
	case s.Addr.Is4():
		family = byte(tracer.FamilyIPv4)
	case s.Addr.Is6():
		family = byte(tracer.FamilyIPv6)
	}
	dst = append(dst, family)
	dst = binary.BigEndian.AppendUint32(dst, s.NetNS)
	var a [16]byte
	if s.Addr.IsValid() {
		a = s.Addr.As16()
	}
	return append(dst, a[:]...)
}

var errCorrupt = errors.New("history entry does not decode")

// valueVersion starts every value, so that a later porttrace can read
// what an earlier one wrote.
const valueVersion = 1

type encoder struct{ b []byte }

// versioned starts a value.
func versioned(dst []byte) encoder { return encoder{append(dst, valueVersion)} }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) socket(s *Socket) {
	e.uvarint(uint64(s.Proto))
	e.uvarint(uint64(s.NetNS))
	e.uvarint(uint64(s.Port))
	a := s.Addr.AsSlice() // nil when invalid; the zone is not kept
	e.uvarint(uint64(len(a)))
	e.b = append(e.b, a...)
}

func (e *encoder) process(p *Process) {
	e.uvarint(uint64(p.PID))
	e.varint(p.StartNs)
	e.str(p.Comm)
	e.str(p.User)
	e.str(p.Exe)
	e.str(p.Cmdline)
}

type decoder struct {
	b   []byte
	err error
}

// advance moves past n bytes just read, or marks the value corrupt if
// reading failed (n <= 0).
func (d *decoder) advance(n int) {
	if n <= 0 {
		d.err, d.b = errCorrupt, nil
		return
	}
	d.b = d.b[n:]
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	d.advance(n)
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	d.advance(n)
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err, d.b = errCorrupt, nil
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) str() string { return string(d.bytes()) }

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) socket() Socket {
	s := Socket{Proto: tracer.Proto(d.uvarint()), NetNS: uint32(d.uvarint()), Port: uint16(d.uvarint())}
	if a := d.bytes(); len(a) > 0 {
		addr, ok := netip.AddrFromSlice(a)
		if !ok {
			d.err = errCorrupt
		}
		s.Addr = addr
	}
	return s
}

func (d *decoder) process() Process {
	return Process{PID: uint32(d.uvarint()), StartNs: d.varint(), Comm: d.str(), User: d.str(), Exe: d.str(), Cmdline: d.str()}
}

// version checks the value's leading version byte.
func (d *decoder) version() {
	if d.byte() != valueVersion && d.err == nil {
		d.err = errCorrupt
	}
}

// storedHolder is a holder as the database keeps it: with the run of
// porttrace that last saw it held, so that a restart can tell which open
// holders its snapshot found again.
type storedHolder struct {
	Holder
	run uint64
}

func (h *storedHolder) encode(dst []byte) []byte {
	e := versioned(dst)
	e.socket(&h.Socket)
	e.process(&h.Owner)
	e.b = append(e.b, byte(h.Via), byte(h.End))
	e.varint(h.FromNs)
	e.varint(h.ListenNs)
	e.varint(h.UntilNs)
	e.uvarint(h.run)
	return e.b
}

func decodeHolder(v []byte) (storedHolder, error) {
	d := decoder{b: v}
	d.version()
	var h storedHolder
	h.Socket = d.socket()
	h.Owner = d.process()
	h.Via, h.End = tracer.OwnerVia(d.byte()), End(d.byte())
	h.FromNs, h.ListenNs, h.UntilNs = d.varint(), d.varint(), d.varint()
	h.run = d.uvarint()
	return h, d.err
}

func (f *FailedBind) encode(dst []byte) []byte {
	e := versioned(dst)
	e.varint(f.TimeNs)
	e.socket(&f.Socket)
	e.varint(int64(f.Errno))
	e.process(&f.By)
	return e.b
}

func decodeFailedBind(v []byte) (FailedBind, error) {
	d := decoder{b: v}
	d.version()
	f := FailedBind{TimeNs: d.varint(), Socket: d.socket(), Errno: int32(d.varint()), By: d.process()}
	return f, d.err
}

func (o *OwnerChange) encode(dst []byte) []byte {
	e := versioned(dst)
	e.varint(o.TimeNs)
	e.socket(&o.Socket)
	e.process(&o.From)
	e.process(&o.To)
	e.b = append(e.b, byte(o.Via))
	return e.b
}

func decodeOwnerChange(v []byte) (OwnerChange, error) {
	d := decoder{b: v}
	d.version()
	o := OwnerChange{TimeNs: d.varint(), Socket: d.socket(), From: d.process(), To: d.process()}
	o.Via = tracer.OwnerVia(d.byte())
	return o, d.err
}

// Connection counts are bare uvarints: the most numerous entries get no
// version byte (a new layout would take a new bucket).
func encodeConnections(dst []byte, c *Connections) []byte {
	e := encoder{dst}
	e.uvarint(uint64(c.Inbound.Opened))
	e.uvarint(uint64(c.Inbound.Closed))
	e.uvarint(uint64(c.Outbound.Opened))
	e.uvarint(uint64(c.Outbound.Closed))
	return e.b
}

func decodeConnections(minute int64, v []byte) (Connections, error) {
	d := decoder{b: v}
	c := Connections{MinuteNs: minute * 60e9}
	c.Inbound = ConnCounts{Opened: uint32(d.uvarint()), Closed: uint32(d.uvarint())}
	c.Outbound = ConnCounts{Opened: uint32(d.uvarint()), Closed: uint32(d.uvarint())}
	return c, d.err
}
