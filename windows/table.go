package windows

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/porttrace/porttrace/tracer"
)

var (
	errMIBState  = errors.New("MIB_TCP_STATE out of range")
	errTableKind = errors.New("no table layout for that protocol and family")
)

// Row is one socket of the port tables that GetExtendedTcpTable and
// GetExtendedUdpTable return.
type Row struct {
	Proto  tracer.Proto
	Family tracer.Family
	Local  netip.AddrPort
	// Remote is the zero AddrPort for UDP, whose table has no remote end.
	Remote netip.AddrPort
	// State is StateUnknown for UDP, whose table has no state.
	State tracer.State
	// PID is the owner. TIME_WAIT rows have none (0): their owner must
	// come from what the tracer saw.
	PID uint32
}

// mibStateDeleteTCB is the MIB_TCP_STATE that SetTcpEntry uses to reset a
// connection; tables may show it for a connection on its way out.
const mibStateDeleteTCB = 12

// mibTCPState maps MIB_TCP_STATE, which counts from 1 (1 CLOSED ... 11
// TIME_WAIT), onto tracer.State. It is the TCPIP provider's numbering plus
// one.
func mibTCPState(v uint32) (tracer.State, error) {
	switch {
	case v == mibStateDeleteTCB:
		return tracer.StateClose, nil
	case v == 0:
		return tracer.StateUnknown, errMIBState
	}
	s, err := etwState(v - 1)
	if err != nil {
		return tracer.StateUnknown, errMIBState
	}
	return s, nil
}

// rowLayout is how one kind of table row is laid out.
type rowLayout struct {
	size   int
	decode func(r *payloadReader, row *Row)
}

// Row sizes of MIB_TCPROW_OWNER_PID, MIB_TCP6ROW_OWNER_PID,
// MIB_UDPROW_OWNER_PID and MIB_UDP6ROW_OWNER_PID.
var (
	tcp4Layout = rowLayout{24, decodeTCP4Row}
	tcp6Layout = rowLayout{56, decodeTCP6Row}
	udp4Layout = rowLayout{12, decodeUDP4Row}
	udp6Layout = rowLayout{28, decodeUDP6Row}
)

func layoutOf(proto tracer.Proto, family tracer.Family) (rowLayout, error) {
	switch {
	case proto == tracer.ProtoTCP && family == tracer.FamilyIPv4:
		return tcp4Layout, nil
	case proto == tracer.ProtoTCP && family == tracer.FamilyIPv6:
		return tcp6Layout, nil
	case proto == tracer.ProtoUDP && family == tracer.FamilyIPv4:
		return udp4Layout, nil
	case proto == tracer.ProtoUDP && family == tracer.FamilyIPv6:
		return udp6Layout, nil
	}
	return rowLayout{}, errTableKind
}

// decodeTable appends to rows the rows of a MIB_TCPTABLE_OWNER_PID,
// MIB_TCP6TABLE_OWNER_PID, MIB_UDPTABLE_OWNER_PID or
// MIB_UDP6TABLE_OWNER_PID: a u32 row count, then the rows, all of 4-byte
// fields, so the first row starts at offset 4.
func decodeTable(b []byte, proto tracer.Proto, family tracer.Family, rows []Row) ([]Row, error) {
	layout, err := layoutOf(proto, family)
	if err != nil {
		return rows, err
	}
	r := payloadReader{b: b}
	count := r.u32()
	if r.err != nil {
		return rows, r.err
	}
	if uint64(count)*uint64(layout.size) > uint64(len(r.b)) {
		return rows, errTruncated
	}
	for range count {
		row := Row{Proto: proto, Family: family}
		layout.decode(&r, &row)
		if r.err != nil {
			return rows, r.err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// port reads a DWORD port field: the port in network order in its first
// two bytes, the rest unused.
func (r *payloadReader) port() uint16 {
	if p := r.take(4); p != nil {
		return binary.BigEndian.Uint16(p)
	}
	return 0
}

// mibState reads a MIB_TCP_STATE field.
func (r *payloadReader) mibState() tracer.State {
	s, err := mibTCPState(r.u32())
	if err != nil && r.err == nil {
		r.err = err
	}
	return s
}

// decodeTCP4Row decodes MIB_TCPROW_OWNER_PID: state, local address, local
// port, remote address, remote port, owning pid.
func decodeTCP4Row(r *payloadReader, row *Row) {
	row.State = r.mibState()
	row.Local = netip.AddrPortFrom(r.addr(tracer.FamilyIPv4), r.port())
	row.Remote = netip.AddrPortFrom(r.addr(tracer.FamilyIPv4), r.port())
	row.PID = r.u32()
}

// decodeTCP6Row decodes MIB_TCP6ROW_OWNER_PID: local address, scope id,
// port, remote address, scope id, port, then state and owning pid.
func decodeTCP6Row(r *payloadReader, row *Row) {
	row.Local = r.addrPort6()
	row.Remote = r.addrPort6()
	row.State = r.mibState()
	row.PID = r.u32()
}

// decodeUDP4Row decodes MIB_UDPROW_OWNER_PID: local address, local port,
// owning pid.
func decodeUDP4Row(r *payloadReader, row *Row) {
	row.Local = netip.AddrPortFrom(r.addr(tracer.FamilyIPv4), r.port())
	row.PID = r.u32()
}

// decodeUDP6Row decodes MIB_UDP6ROW_OWNER_PID: local address, scope id,
// local port, owning pid.
func decodeUDP6Row(r *payloadReader, row *Row) {
	row.Local = r.addrPort6()
	row.PID = r.u32()
}

// addrPort6 reads the IPv6 address, scope id and port that the IPv6 rows
// use for each end. The scope id is not kept.
func (r *payloadReader) addrPort6() netip.AddrPort {
	addr := r.addr(tracer.FamilyIPv6)
	r.u32() // scope id
	return netip.AddrPortFrom(addr, r.port())
}
