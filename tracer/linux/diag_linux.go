package linux

import (
	"os"

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
	inetDiagBCDGE       = 4  // INET_DIAG_BC_D_GE
	inetDiagBCDLE       = 5  // INET_DIAG_BC_D_LE
	inetDiagReqLen      = 56 // struct inet_diag_req_v2
	inetDiagMsgLen      = 72 // struct inet_diag_msg
	allStates           = 0xffffffff
)

// side is which end of a socket a dump matches the port against.
type side uint8

const (
	localSide side = iota
	remoteSide
)

// timerNames are inet_diag_msg's idiag_timer values, as ss names them.
var timerNames = [...]string{1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}

// diagPort lists, in one network namespace, the TCP and UDP sockets whose
// local or remote port is port: both sides of the port (port 0: all). A bytecode filter
// makes the kernel drop the others, so the answer follows the port, not
// the machine's sockets. Without UDP sock_diag (udp_diag not loaded) the
// UDP sockets are missing and noUDP says so.
func diagPort(ns Namespace, port uint16) (socks []snapshot.PortSocket, noUDP bool, err error) {
	var cfg netlink.Config
	// Entering a namespace needs CAP_SYS_ADMIN, even one's own: only
	// another namespace is entered.
	if own, err := CurrentNamespace(); ns.path != "" && (err != nil || own.Inode != ns.Inode) {
		f, err := os.Open(ns.path)
		if err != nil {
			return nil, false, fmt.Errorf("opening network namespace %s: %w", ns.Label(), err)
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	conn, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, &cfg)
	if err != nil {
		return nil, false, fmt.Errorf("opening sock_diag in %s: %w", ns.Label(), err)
	}
	defer conn.Close()
	// A socket whose both ends use the port is listed by both dumps.
	seen := map[uint64]bool{}
	for _, proto := range []tracer.Proto{tracer.ProtoTCP, tracer.ProtoUDP} {
		for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
			sides := []side{localSide, remoteSide}
			if port == 0 {
				sides = sides[:1] // no filter: one dump has them all
			}
			for _, sd := range sides {
				msgs, err := conn.Execute(netlink.Message{
					Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
					Data:   diagRequest(family, proto, allStates, sd, port),
				})
				if proto == tracer.ProtoUDP && errors.Is(err, unix.ENOENT) {
					noUDP = true
					break
				}
				if err != nil {
					return nil, false, fmt.Errorf("sock_diag dump of %s sockets in %s: %w", proto, ns.Label(), err)
				}
				for _, m := range msgs {
					s, cookie, err := decodeDiagMsg(m.Data, proto)
					if err != nil {
						return nil, false, fmt.Errorf("sock_diag answer: %w", err)
					}
					if !seen[cookie] {
						seen[cookie] = true
						s.NetNS = ns.Inode
						socks = append(socks, s)
					}
				}
			}
		}
	}
	return socks, noUDP, nil
}

// diagRequest is an inet_diag_req_v2 for the given states of one family
// and protocol, with a bytecode filter "port >= P && port <= P" on one side
// (the equality operators are younger than the kernels porttrace runs on).
// Each operation is {code, yes, no} followed by its argument in a second
// operation's no field; a jump past the end by 4 rejects.
//
// Port 0 asks for every socket, with no filter.
func diagRequest(family uint8, proto tracer.Proto, states uint32, sd side, port uint16) []byte {
	b := make([]byte, inetDiagReqLen)
	b[0], b[1] = family, uint8(proto)
	binary.NativeEndian.PutUint32(b[4:], states)
	if port == 0 {
		return b
	}
	ge, le := byte(inetDiagBCSGE), byte(inetDiagBCSLE)
	if sd == remoteSide {
		ge, le = inetDiagBCDGE, inetDiagBCDLE
	}
	bc := []byte{
		ge, 8, 0, 0, 0, 0, 0, 0, // no: 20, patched below
		le, 8, 0, 0, 0, 0, 0, 0, // no: 12
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

// decodeDiagMsg reads one inet_diag_msg and its attributes, with the
// socket's cookie (its identity in sock_diag).
func decodeDiagMsg(b []byte, proto tracer.Proto) (snapshot.PortSocket, uint64, error) {
	if len(b) < inetDiagMsgLen {
		return snapshot.PortSocket{}, 0, errShortDiag
	}
	s := snapshot.PortSocket{Proto: proto, State: tracer.State(b[1])}
	if s.State >= tracer.StateCount {
		return snapshot.PortSocket{}, 0, errBadState
	}
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
		return snapshot.PortSocket{}, 0, errBadFamily
	}
	s.Local, s.Remote = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	s.Interface = ne.Uint32(b[40:])
	cookie := ne.Uint64(b[44:])
	if t := b[2]; int(t) < len(timerNames) && timerNames[t] != "" {
		s.Timer = timerNames[t]
		s.TimerNs = int64(ne.Uint32(b[52:])) * 1e6 // idiag_expires counts down in ms
	}
	s.RecvQ, s.SendQ = ne.Uint32(b[56:]), ne.Uint32(b[60:])
	s.UID = ne.Uint32(b[64:])
	s.Inode = uint64(ne.Uint32(b[68:]))
	ad, err := netlink.NewAttributeDecoder(b[inetDiagMsgLen:])
	if err != nil {
		return snapshot.PortSocket{}, 0, err
	}
	for ad.Next() {
		if ad.Type() == inetDiagSkV6Only {
			s.V6Only = ad.Uint8() != 0
		}
	}
	return s, cookie, ad.Err()
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
		req := diagRequest(family, tracer.ProtoTCP, 1<<tracer.StateTimeWait, localSide, port)
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
