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
	inetDiagBCJmp       = 1  // INET_DIAG_BC_JMP
	inetDiagBCSGE       = 2  // INET_DIAG_BC_S_GE
	inetDiagBCSLE       = 3  // INET_DIAG_BC_S_LE
	inetDiagBCDGE       = 4  // INET_DIAG_BC_D_GE
	inetDiagBCDLE       = 5  // INET_DIAG_BC_D_LE
	inetDiagReqLen      = 56 // struct inet_diag_req_v2
	inetDiagReqOldLen   = 60 // struct inet_diag_req, of TCPDIAG_GETSOCK
	tcpDiagGetSock      = 18 // TCPDIAG_GETSOCK
	inetDiagMsgLen      = 72 // struct inet_diag_msg
	allStates           = 0xffffffff
)

// side is which end of a socket a dump matches the port against.
type side uint8

const (
	localSide  side = iota
	eitherSide      // the local or the remote end
)

// timerNames are inet_diag_msg's idiag_timer values, as ss names them.
var timerNames = [...]string{1: "on", 2: "keepalive", 3: snapshot.TimerTimeWait, 4: "persist"}

// diagPort lists, in one network namespace, the TCP and UDP sockets whose
// local or remote port is port: both sides of the port (port 0: all). A
// bytecode filter makes the kernel drop the others, so the answer follows
// the port, not the machine's sockets; the kernel still walks every TCP
// socket for it. Asked by ends, it does not: see byEnds. Without UDP
// sock_diag (udp_diag not loaded) the UDP sockets are missing and noUDP
// says so.
func diagPort(ns Namespace, port uint16, ends *byEnds) (socks []snapshot.PortSocket, noUDP bool, err error) {
	var cfg netlink.Config
	// Entering a namespace needs CAP_SYS_ADMIN, even one's own: only
	// another namespace is entered.
	if own, err := inodeAt(ownNamespacePath); ns.path != "" && (err != nil || own != ns.Inode) {
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
	// Each dump walks every socket of its protocol in the kernel, whatever
	// it keeps, so one filter keeps both ends of the port, and TCP's dump
	// is the older request, TCPDIAG_GETSOCK, which the kernel answers for
	// both families in one walk (inet_diag_dump_compat). UDP has no such
	// request: a dump for each family, of a much smaller table.
	type dump struct {
		proto tracer.Proto
		typ   netlink.HeaderType
		req   []byte
	}
	dumps := []dump{{tracer.ProtoTCP, tcpDiagGetSock, tcpDiagRequest(allStates, eitherSide, port)}}
	if ends != nil {
		// The kernel walks only its listening table for a dump of
		// listeners on the local side.
		dumps = []dump{{tracer.ProtoTCP, tcpDiagGetSock, tcpDiagRequest(1<<tracer.StateListen, localSide, port)}}
		if ends.unheld {
			dumps = append(dumps, dump{tracer.ProtoTCP, tcpDiagGetSock, tcpDiagRequest(tracer.UnheldStates, eitherSide, port)})
		}
	}
	dumps = append(dumps,
		dump{tracer.ProtoUDP, unix.SOCK_DIAG_BY_FAMILY, diagRequest(unix.AF_INET, tracer.ProtoUDP, allStates, eitherSide, port)},
		dump{tracer.ProtoUDP, unix.SOCK_DIAG_BY_FAMILY, diagRequest(unix.AF_INET6, tracer.ProtoUDP, allStates, eitherSide, port)},
	)
	buf := make([]byte, dumpBufferSize)
	var dumped pieces[snapshot.PortSocket]
	for _, d := range dumps {
		err := diagDump(conn, buf, d.typ, d.req, func(msg []byte) error {
			s, err := decodeDiagMsg(msg, d.proto)
			if err != nil {
				return fmt.Errorf("sock_diag answer: %w", err)
			}
			s.NetNS = ns.Inode
			dumped.add(s)
			return nil
		})
		if d.proto == tracer.ProtoUDP && errors.Is(err, unix.ENOENT) {
			noUDP = true
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("sock_diag dump of %s sockets in %s: %w", d.proto, ns.Label(), err)
		}
	}
	if ends == nil || len(ends.conns) == 0 {
		return dumped.join(0), noUDP, nil
	}
	socks = dumped.join(len(ends.conns))
	type listed struct {
		key   snapshot.SocketKey
		inode uint64
	}
	inDump := make(map[listed]bool, len(socks))
	for i := range socks {
		inDump[listed{snapshot.KeyOf(ns.Inode, socks[i].Local, socks[i].Remote), socks[i].Inode}] = true
	}
	for _, k := range ends.conns {
		s, found, err := diagLookup(conn, buf, k)
		if err != nil {
			return nil, false, fmt.Errorf("sock_diag lookup of %v -> %v in %s: %w", k.Local, k.Remote, ns.Label(), err)
		}
		if found && !inDump[listed{k, s.Inode}] {
			s.NetNS = ns.Inode
			socks = append(socks, s)
		}
	}
	return socks, noUDP, nil
}

// byEnds asks diagPort for a port's TCP sockets by their ends: the port's
// listeners from the kernel's listening table alone, and conns each looked
// up by its ends (a hash lookup in the kernel; one that is gone is left
// out), where the kernel would otherwise walk every TCP socket and answer
// for each on the port. With unheld, the port's sockets no process may
// hold (TIME_WAIT, orphans closing, handshakes) come from a walk too, one
// that answers for no socket in another state; one it lists is not listed
// again by its lookup.
type byEnds struct {
	conns  []snapshot.SocketKey
	unheld bool
}

// diagLookup asks sock_diag for the TCP socket with ends k (in conn's
// namespace); found is false when there is none.
func diagLookup(conn *netlink.Conn, buf []byte, k snapshot.SocketKey) (s snapshot.PortSocket, found bool, err error) {
	// An IPv4 connection of a dual-stack socket is found by its IPv4 ends.
	family := uint8(unix.AF_INET6)
	if k.Local.Addr().Is4() {
		family = unix.AF_INET
	}
	req := diagRequest(family, tracer.ProtoTCP, allStates, localSide, 0)
	// inet_diag_sockid: ports (big-endian), source and destination
	// addresses (16 bytes each), interface, cookie (none: all ones).
	id := req[8:]
	binary.BigEndian.PutUint16(id[0:], k.Local.Port())
	binary.BigEndian.PutUint16(id[2:], k.Remote.Port())
	copy(id[4:], k.Local.Addr().AsSlice())
	copy(id[20:], k.Remote.Addr().AsSlice())
	binary.NativeEndian.PutUint64(id[40:], ^uint64(0))
	// The answer is one message, the socket, or an error; it stays in buf
	// as no more is read.
	var msg []byte
	err = ask(conn, buf, netlink.Request, unix.SOCK_DIAG_BY_FAMILY, req, func(m []byte) error {
		msg = m
		return errAnswered
	})
	switch {
	case errors.Is(err, unix.ENOENT) || err == nil && msg == nil:
		return s, false, nil
	case err != nil && !errors.Is(err, errAnswered):
		return s, false, err
	}
	if s, err = decodeDiagMsg(msg, tracer.ProtoTCP); err != nil {
		return s, false, err
	}
	// Where no connection has these ends, the kernel answers with the
	// listener a packet to them would reach.
	return s, snapshot.KeyOf(k.NetNS, s.Local, s.Remote) == k, nil
}

// errAnswered stops eachAnswer at a lookup's one answer.
var errAnswered = errors.New("answered")

// dumpBufferSize holds the biggest batch the kernel writes for one read of a
// netlink dump (32 KiB, netlink's max_recvmsg_len) with room to spare.
const dumpBufferSize = 64 << 10

// diagDump sends a sock_diag dump request and calls each with every answer's
// payload (see ask).
func diagDump(conn *netlink.Conn, buf []byte, typ netlink.HeaderType, req []byte, each func(msg []byte) error) error {
	return ask(conn, buf, netlink.Request|netlink.Dump, typ, req, each)
}

// ask sends a sock_diag request and calls each with every answer's payload
// until the answers end or each returns an error. It reads the answers
// itself, into buf, which it reuses: a port's tens of thousands of sockets
// then cost no allocation each, where netlink.Conn.Execute allocates every
// message.
func ask(conn *netlink.Conn, buf []byte, flags netlink.HeaderFlags, typ netlink.HeaderType, req []byte, each func(msg []byte) error) error {
	sent, err := conn.Send(netlink.Message{Header: netlink.Header{Type: typ, Flags: flags}, Data: req})
	if err != nil {
		return err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var n int
		var recvErr error
		// The socket is non-blocking: returning false waits until it is
		// readable.
		if err := raw.Read(func(fd uintptr) bool {
			n, _, recvErr = unix.Recvfrom(int(fd), buf, 0)
			return recvErr != unix.EAGAIN
		}); err != nil {
			return err
		}
		if recvErr != nil {
			return recvErr
		}
		done, err := eachAnswer(buf[:n], sent.Header.Sequence, each)
		if done || err != nil {
			return err
		}
	}
}

// eachAnswer calls each with the payload of every message in one read of a
// dump's answers to the request numbered seq; done says the dump ended.
func eachAnswer(b []byte, seq uint32, each func(msg []byte) error) (done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		size := int(ne.Uint32(b))
		if size < unix.NLMSG_HDRLEN || size > len(b) {
			return true, errShortDiag
		}
		typ, msgSeq, payload := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[unix.NLMSG_HDRLEN:size]
		b = b[min(len(b), (size+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
		if msgSeq != seq {
			continue // an answer to an earlier request
		}
		switch typ {
		case unix.NLMSG_DONE:
			// A dump that failed part way says so here.
			if len(payload) >= 4 && int32(ne.Uint32(payload)) < 0 {
				return true, unix.Errno(-int32(ne.Uint32(payload)))
			}
			return true, nil
		case unix.NLMSG_ERROR:
			if len(payload) < 4 {
				return true, errShortDiag
			}
			if code := int32(ne.Uint32(payload)); code < 0 {
				return true, unix.Errno(-code)
			}
			return true, nil
		}
		if err := each(payload); err != nil {
			return true, err
		}
	}
	return false, nil
}

// diagRequest is an inet_diag_req_v2 for the given states of one family
// and protocol, filtered on port (see portFilter).
func diagRequest(family uint8, proto tracer.Proto, states uint32, sd side, port uint16) []byte {
	b := make([]byte, inetDiagReqLen)
	b[0], b[1] = family, uint8(proto)
	binary.NativeEndian.PutUint32(b[4:], states)
	return append(b, portFilter(sd, port)...)
}

// tcpDiagRequest is a struct inet_diag_req for TCPDIAG_GETSOCK, for the
// given states of TCP sockets of both families, filtered on port (see
// portFilter). Its states follow its family and lengths (4 bytes) and the
// socket id (48).
func tcpDiagRequest(states uint32, sd side, port uint16) []byte {
	b := make([]byte, inetDiagReqOldLen)
	binary.NativeEndian.PutUint32(b[52:], states)
	return append(b, portFilter(sd, port)...)
}

// portFilter is the bytecode attribute that keeps the sockets whose port
// is port: "P <= port <= P" on the local end, or on either end (the
// equality operators are younger than the kernels porttrace runs on).
// Port 0 keeps every socket: no filter.
//
// The kernel checks the bytecode by following each operation's "yes"
// jump from the start: every "no" jump must land on an operation so
// reached, at the end (accept) or 4 past it (reject). An "or" therefore
// ends its first half with a JMP over the second, as ss builds it.
func portFilter(sd side, port uint16) []byte {
	if port == 0 {
		return nil
	}
	var bc []byte
	// op appends {code, yes, no}; a port comparison's port follows in a
	// second operation's no field.
	op := func(code, yes byte, no uint16) {
		bc = append(bc, code, yes, 0, 0)
		binary.NativeEndian.PutUint16(bc[len(bc)-2:], no)
	}
	compare := func(code byte, no uint16) {
		op(code, 8, no)
		op(0, 0, port)
	}
	switch sd {
	case localSide: // 0: S_GE, 8: S_LE, 16: end
		compare(inetDiagBCSGE, 20)
		compare(inetDiagBCSLE, 12)
	case eitherSide: // 0: S_GE, 8: S_LE, 16: JMP, 20: D_GE, 28: D_LE, 36: end
		compare(inetDiagBCSGE, 20)
		compare(inetDiagBCSLE, 12)
		op(inetDiagBCJmp, 4, 20)
		compare(inetDiagBCDGE, 20)
		compare(inetDiagBCDLE, 12)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(inetDiagReqBytecode, bc)
	attrs, _ := ae.Encode() // encoding bytes cannot fail
	return attrs
}

var errShortDiag = errors.New("short inet_diag_msg")

// decodeDiagMsg reads one inet_diag_msg and its attributes.
func decodeDiagMsg(b []byte, proto tracer.Proto) (snapshot.PortSocket, error) {
	if len(b) < inetDiagMsgLen {
		return snapshot.PortSocket{}, errShortDiag
	}
	s := snapshot.PortSocket{Proto: proto, State: tracer.State(b[1])}
	if s.State >= tracer.StateCount {
		return snapshot.PortSocket{}, errBadState
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
		return snapshot.PortSocket{}, errBadFamily
	}
	s.Local, s.Remote = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	s.Interface = ne.Uint32(b[40:])
	if t := b[2]; int(t) < len(timerNames) && timerNames[t] != "" {
		s.Timer = timerNames[t]
		s.TimerNs = int64(ne.Uint32(b[52:])) * 1e6 // idiag_expires counts down in ms
	}
	s.RecvQ, s.SendQ = ne.Uint32(b[56:]), ne.Uint32(b[60:])
	s.UID = ne.Uint32(b[64:])
	s.Inode = uint64(ne.Uint32(b[68:]))
	// The attributes (struct rtattr: length, type, value, padded to 4
	// bytes), read in place.
	for a := b[inetDiagMsgLen:]; len(a) >= 4; {
		size := int(ne.Uint16(a))
		if size < 4 || size > len(a) {
			return snapshot.PortSocket{}, errShortDiag
		}
		if ne.Uint16(a[2:]) == inetDiagSkV6Only && size > 4 {
			s.V6Only = a[4] != 0
		}
		a = a[min(len(a), (size+3)&^3):]
	}
	return s, nil
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
