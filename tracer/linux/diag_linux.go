package linux

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"

	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sock_diag (linux/inet_diag.h) as porttrace uses it.
const (
	inetDiagReqBytecode = 1  // INET_DIAG_REQ_BYTECODE
	inetDiagSkV6Only    = 11 // INET_DIAG_SKV6ONLY
	inetDiagBCSGE       = 2  // INET_DIAG_BC_S_GE
	inetDiagBCSLE       = 3  // INET_DIAG_BC_S_LE
	inetDiagReqLen      = 56 // struct inet_diag_req_v2
	inetDiagMsgLen      = 72 // struct inet_diag_msg
)

// orphanStates are the TCP states a socket can be in once no process holds
// it: TIME_WAIT, the closing states of a closed socket, and connections
// waiting to be accepted. Sockets a process holds are found with their
// holders by the owner iterator; sock_diag is asked only for these.
const orphanStates = 1<<tracer.StateTimeWait | 1<<tracer.StateFinWait1 | 1<<tracer.StateFinWait2 | 1<<tracer.StateClosing |
	1<<tracer.StateLastAck | 1<<tracer.StateSynRecv | 1<<tracer.StateNewSynRecv

// diagOrphans asks the kernel for the TCP sockets, IPv4 and IPv6, whose
// local port is port and whose state is one that orphans take. A bytecode
// filter and the state mask make the kernel drop the others, so the answer
// follows the port's orphans, not the machine's sockets.
func diagOrphans(port uint16) ([]snapshot.PortSocket, error) {
	conn, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return nil, fmt.Errorf("opening sock_diag: %w", err)
	}
	defer conn.Close()
	var out []snapshot.PortSocket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := conn.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
			Data:   diagRequest(family, port),
		})
		if err != nil {
			return nil, fmt.Errorf("sock_diag dump of tcp sockets: %w", err)
		}
		for _, m := range msgs {
			s, err := decodeDiagMsg(m.Data)
			if err != nil {
				return nil, fmt.Errorf("sock_diag answer: %w", err)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// diagRequest is an inet_diag_req_v2 for the TCP orphan states of one
// family, with a bytecode filter "local port >= port && local port <=
// port" (the equality operator is younger than the kernels porttrace runs
// on). Each operation is {code, yes, no} followed by its argument in a
// second operation's no field; a jump past the end by 4 rejects.
func diagRequest(family uint8, port uint16) []byte {
	b := make([]byte, inetDiagReqLen)
	b[0], b[1] = family, uint8(tracer.ProtoTCP)
	binary.NativeEndian.PutUint32(b[4:], orphanStates)
	bc := []byte{
		inetDiagBCSGE, 8, 0, 0, 0, 0, 0, 0, // no: 20, patched below
		inetDiagBCSLE, 8, 0, 0, 0, 0, 0, 0, // no: 12
	}
	ne := binary.NativeEndian
	ne.PutUint16(bc[2:], 20)
	ne.PutUint16(bc[6:], port)
	ne.PutUint16(bc[10:], 12)
	ne.PutUint16(bc[14:], port)
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(inetDiagReqBytecode, bc)
	attrs, _ := ae.Encode() // encoding bytes cannot fail
	return append(b, attrs...)
}

var errShortDiag = errors.New("short inet_diag_msg")

// decodeDiagMsg reads one inet_diag_msg and its attributes.
func decodeDiagMsg(b []byte) (snapshot.PortSocket, error) {
	if len(b) < inetDiagMsgLen {
		return snapshot.PortSocket{}, errShortDiag
	}
	s := snapshot.PortSocket{Proto: tracer.ProtoTCP, State: tracer.State(b[1])}
	be, ne := binary.BigEndian, binary.NativeEndian
	sport, dport := be.Uint16(b[4:]), be.Uint16(b[6:])
	var src, dst netip.Addr
	switch b[0] {
	case unix.AF_INET:
		s.Family = tracer.FamilyIPv4
		src, dst = netip.AddrFrom4([4]byte(b[8:12])), netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		s.Family = tracer.FamilyIPv6
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return snapshot.PortSocket{}, errBadFamily
	}
	s.Local, s.Remote = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	// A timewait socket's timer (idiag_timer 3) counts down in ms.
	if b[2] == 3 {
		s.TimerNs = int64(ne.Uint32(b[52:])) * 1e6
	}
	s.Inode = uint64(ne.Uint32(b[68:]))
	ad, err := netlink.NewAttributeDecoder(b[inetDiagMsgLen:])
	if err != nil {
		return snapshot.PortSocket{}, err
	}
	for ad.Next() {
		if ad.Type() == inetDiagSkV6Only {
			s.V6Only = ad.Uint8() != 0
		}
	}
	return s, ad.Err()
}

// sockDestroy is SOCK_DESTROY (linux/sock_diag.h): what ss -K sends.
const sockDestroy = 21

// DestroyResult says what SOCK_DESTROY did to a port's TIME_WAIT sockets.
type DestroyResult struct {
	// Found is how many there were; Remaining how many were still there
	// afterwards (the kernel declines TIME_WAIT sockets before Linux 6.0,
	// without an error).
	Found, Remaining int
}

// DestroyTimeWait asks the kernel to drop the TIME_WAIT sockets whose local
// port is port, in porttrace's network namespace, as `ss -K state
// time-wait` does, then counts what is left. It needs CAP_NET_ADMIN and a
// kernel built with CONFIG_INET_DIAG_DESTROY (an error names which is
// missing), and Linux 6.0 for TIME_WAIT sockets (older kernels leave them:
// Remaining says so).
func DestroyTimeWait(port uint16) (DestroyResult, error) {
	var res DestroyResult
	conn, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return res, fmt.Errorf("opening sock_diag: %w", err)
	}
	defer conn.Close()
	ids, err := timeWaitIDs(conn, port)
	if err != nil {
		return res, err
	}
	res.Found = len(ids)
	for _, id := range ids {
		_, err := conn.Execute(netlink.Message{
			Header: netlink.Header{Type: sockDestroy, Flags: netlink.Request | netlink.Acknowledge},
			Data:   id,
		})
		switch {
		case err == nil, errors.Is(err, unix.ENOENT): // ENOENT: gone by itself meanwhile
		case errors.Is(err, unix.EOPNOTSUPP):
			return res, fmt.Errorf("this kernel cannot destroy sockets (it needs CONFIG_INET_DIAG_DESTROY): %w", err)
		case errors.Is(err, unix.EPERM):
			return res, fmt.Errorf("destroying sockets needs CAP_NET_ADMIN: %w", err)
		default:
			return res, fmt.Errorf("destroying a TIME_WAIT socket: %w", err)
		}
	}
	left, err := timeWaitIDs(conn, port)
	res.Remaining = len(left)
	return res, err
}

// timeWaitIDs lists the port's TIME_WAIT sockets as SOCK_DESTROY requests:
// each names its socket by the dump's own inet_diag_sockid (ports,
// addresses, interface and cookie: 48 bytes at offset 4 of inet_diag_msg,
// offset 8 of inet_diag_req_v2).
func timeWaitIDs(conn *netlink.Conn, port uint16) ([][]byte, error) {
	var ids [][]byte
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := diagRequest(family, port)
		binary.NativeEndian.PutUint32(req[4:], 1<<tracer.StateTimeWait)
		msgs, err := conn.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
			Data:   req,
		})
		if err != nil {
			return nil, fmt.Errorf("sock_diag dump of TIME_WAIT sockets: %w", err)
		}
		for _, m := range msgs {
			if len(m.Data) < inetDiagMsgLen {
				return nil, errShortDiag
			}
			id := make([]byte, inetDiagReqLen)
			id[0], id[1] = family, uint8(tracer.ProtoTCP)
			binary.NativeEndian.PutUint32(id[4:], 1<<tracer.StateTimeWait)
			copy(id[8:56], m.Data[4:52])
			ids = append(ids, id)
		}
	}
	return ids, nil
}
