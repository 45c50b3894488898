package linux

import (
	"net"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"

	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

// Sockets lists, without their holders, the TCP and UDP sockets on both
// sides of port in one network namespace, with the facts the kernel gives
// any user (states, queues, timers): what who shows without privileges.
func Sockets(port uint16, ns Namespace) (*snapshot.PortReport, error) {
	return sockets(port, ns, nil)
}

// SocketsByEnds is Sockets for a caller that knows the port's TCP sockets
// but its listeners, by their ends (in ns): they are looked up one by one
// instead of walking every TCP socket, so that the answer's cost follows
// the port's sockets, not the machine's. A socket in conns that is gone is
// left out; one missing from conns is not found, but where unheld is set,
// for a caller that may not know the sockets no process holds (TIME_WAIT,
// orphans), those come from a walk that answers for no socket in another
// state.
func SocketsByEnds(port uint16, ns Namespace, conns []snapshot.SocketKey, unheld bool) (*snapshot.PortReport, error) {
	return sockets(port, ns, &byEnds{conns: conns, unheld: unheld})
}

func sockets(port uint16, ns Namespace, ends *byEnds) (*snapshot.PortReport, error) {
	socks, noUDP, err := diagPort(ns, port, ends)
	if err != nil {
		return nil, err
	}
	r := &snapshot.PortReport{Port: port, Sockets: socks}
	if noUDP {
		r.Notes = append(r.Notes, "UDP sockets not shown: this kernel has no UDP sock_diag (load the udp_diag module)")
	}
	return r, nil
}

// Who answers "who owns this port?" for porttrace's own network namespace.
func Who(port uint16) (*snapshot.PortReport, error) {
	ns, err := CurrentNamespace()
	if err != nil {
		return nil, fmt.Errorf("reading the network namespace: %w", err)
	}
	return WhoIn(port, []Namespace{ns}, proc.NewResolver())
}

// WhoIn answers "who owns this port?" for the given network namespaces:
// both sides of the port, what serves on it and what connects to it. The
// sockets and their kernel facts come from sock_diag in each namespace
// (filtered by the kernel on the port); their holders from one in-kernel
// walk of every process's open files, which writes out only the sockets on
// the port. Neither reads /proc for processes that hold nothing on the
// port, and neither grows with sockets on other ports.
//
// Processes are named through resolver, which a long-running caller keeps.
// Port 0 lists every socket: the daemon's starting snapshot.
func WhoIn(port uint16, namespaces []Namespace, resolver *proc.Resolver) (*snapshot.PortReport, error) {
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	// The iterator and the dumps are independent kernel walks: run them
	// together.
	type dump struct {
		socks []snapshot.PortSocket
		noUDP bool
		err   error
	}
	dumps := make([]dump, len(namespaces))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, ns := range namespaces {
			d := &dumps[i]
			d.socks, d.noUDP, d.err = diagPort(ns, port, nil)
		}
	}()
	owners, err := socketOwners(port)
	<-done
	if err != nil {
		return nil, err
	}
	r := &snapshot.PortReport{Port: port, Processes: map[uint32]*proc.Process{}, StartNs: map[uint32]uint64{}}
	asked := map[uint32]bool{}
	for i, d := range dumps {
		switch {
		case errors.Is(d.err, unix.ENOENT):
			// No TCP sock_diag (inet_diag and tcp_diag not loaded, or
			// not built): the iterator still names what processes hold.
			r.Notes = append(r.Notes, "sockets no process holds (TIME_WAIT, orphans) not shown: this kernel has no TCP sock_diag (load the tcp_diag module)")
		case d.err != nil:
			return nil, d.err
		case d.noUDP:
			r.Notes = append(r.Notes, "UDP sockets no process holds not shown: this kernel has no UDP sock_diag (load the udp_diag module)")
		}
		asked[namespaces[i].Inode] = true
		if r.Sockets == nil {
			r.Sockets = d.socks // a busy port's are not copied again
		} else {
			r.Sockets = append(r.Sockets, d.socks...)
		}
	}
	addOwners(r, owners, asked)
	for pid, seen := range owners.processes() {
		if !r.Holds(pid) {
			continue
		}
		r.StartNs[pid] = seen.StartNs
		p, err := resolver.Lookup(proc.Identity{PID: pid, StartNs: seen.StartNs})
		if err != nil {
			// Exited since the walk: it keeps what the kernel said of it.
			p = proc.Process{Identity: proc.Identity{PID: pid, StartNs: seen.StartNs}, Name: seen.Comm.String(), Exited: true}
			p.Cgroup.ID = seen.CgroupID
			if c, ok := resolver.CgroupByID(seen.CgroupID); ok {
				p.Cgroup = c
			}
		}
		r.Processes[pid] = &p
	}
	current, err := CurrentNamespace()
	if err != nil {
		return nil, err
	}
	for _, ns := range namespaces {
		if ns.Inode != current.Inode {
			if r.Elsewhere == nil {
				r.Elsewhere = map[uint32]string{}
			}
			r.Elsewhere[ns.Inode] = ns.Label()
		}
	}
	zoneLinkLocal(r, current.Inode)
	// Other namespaces' port ranges are taken to be this one's: reading
	// theirs means entering each.
	ephemeral, err := ephemeralPorts()
	if err != nil {
		r.Notes = append(r.Notes, fmt.Sprintf("clients' connections not told from servers' where no listener tells them: %v", err))
	}
	r.MarkRoles(ephemeral)
	return r, nil
}

// owner is one socket held by one process, as the iterator writes it.
type owner struct {
	sock, inode uint64
	// subflow is an MPTCP socket's first TCP subflow, which the tracer's
	// events name for it; 0 for others.
	subflow     uint64
	netns       uint32
	family      tracer.Family
	proto       tracer.Proto
	state       tracer.State
	local, peer netip.AddrPort
	v6only      bool
	fd          int32
	process     tracer.Process
}

type owners []owner

// processes lists each holding process once.
func (os owners) processes() map[uint32]tracer.Process {
	m := map[uint32]tracer.Process{}
	for _, o := range os {
		m[o.process.PID] = o.process
	}
	return m
}

// addOwners names the holders of r's sockets, joined by namespace and
// inode, and adds the sockets in the asked namespaces that sock_diag did
// not list (an MPTCP socket, whose traced subflows are kernel sockets; a
// kernel without sock_diag). Sockets of other namespaces are left out: a
// listener elsewhere does not hold the port here.
func addOwners(r *snapshot.PortReport, os owners, asked map[uint32]bool) {
	// A socket's inode number is 32 bits (sockfs takes it from
	// get_next_ino(), sock_diag reports it as a __u32): with its network
	// namespace's it makes one 64-bit key, which a map hashes fastest.
	key := func(netns uint32, inode uint64) uint64 { return uint64(netns)<<32 | inode&0xffffffff }
	index := make(map[uint64]int, len(r.Sockets))
	for i := range r.Sockets {
		if s := &r.Sockets[i]; s.Inode != 0 {
			index[key(s.NetNS, s.Inode)] = i
		}
	}
	pids, fds := make([]uint32, 0, len(os)), make([]int32, 0, len(os))
	for _, o := range os {
		if !asked[o.netns] {
			continue
		}
		k := key(o.netns, o.inode)
		i, ok := index[k]
		if !ok {
			r.Sockets = append(r.Sockets, snapshot.PortSocket{
				Proto: o.proto, Family: o.family, State: o.state, Local: o.local, Remote: o.peer,
				V6Only: o.v6only, Inode: o.inode, NetNS: o.netns,
			})
			i = len(r.Sockets) - 1
			index[k] = i
		}
		s := &r.Sockets[i]
		s.Sock = tracer.SockID(o.sock)
		if o.proto == tracer.ProtoMPTCP {
			s.Proto, s.Subflow = o.proto, tracer.SockID(o.subflow)
		}
		switch {
		case s.PIDs == nil:
			// Most sockets have one holder: theirs is a slot of one shared
			// array, capped so that a second holder's append copies it.
			n := len(pids)
			pids, fds = append(pids, o.process.PID), append(fds, o.fd)
			s.PIDs, s.FDs = pids[n:n+1:n+1], fds[n:n+1:n+1]
		case !slices.Contains(s.PIDs, o.process.PID):
			s.PIDs = append(s.PIDs, o.process.PID)
			s.FDs = append(s.FDs, o.fd)
		}
	}
}

// portsWalkedOneByOne is how many ports FindHolders walks the open files
// for one at a time; for more, one walk of every port's sockets costs less.
const portsWalkedOneByOne = 8

// FindHolders implements tracer.HolderFinder with who's walk of every
// process's open files.
func (s *LinuxSource) FindHolders(socks []tracer.HolderQuery) ([]tracer.Holder, error) {
	wanted := make(map[tracer.SockID]bool, len(socks))
	var ports []uint16
	for _, q := range socks {
		wanted[q.Sock] = true
		if !slices.Contains(ports, q.Port) {
			ports = append(ports, q.Port)
		}
	}
	if len(ports) > portsWalkedOneByOne {
		ports = []uint16{0}
	}
	var holders []tracer.Holder
	for _, port := range ports {
		found, err := socketOwners(port)
		if err != nil {
			return nil, err
		}
		for _, o := range found {
			if wanted[tracer.SockID(o.sock)] {
				holders = append(holders, tracer.Holder{Sock: tracer.SockID(o.sock), Process: o.process})
			}
		}
	}
	return holders, nil
}

// socketOwners runs the socket_owners iterator for a port, or for every
// port if port is 0.
func socketOwners(port uint16) (owners, error) {
	types := btf.NewCache()
	return socketOwnersReading(port, iterSockFromFile(types), types)
}

// socketOwnersReading is socketOwners with the sockets read in place or
// through the helper (sockInPlace: the kernel has bpf_sock_from_file for
// iterators), finding the kernel's types in types.
func socketOwnersReading(port uint16, sockInPlace bool, types *btf.Cache) (owners, error) {
	liftMemlock()
	spec, err := bpf.LoadOwners()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[bpf.OwnersVarOwnerPort].Set(port); err != nil {
		return nil, fmt.Errorf("setting owner_port: %w", err)
	}
	if err := spec.Variables[bpf.OwnersVarSockInPlace].Set(sockInPlace); err != nil {
		return nil, fmt.Errorf("setting sock_in_place: %w", err)
	}
	// The iterator alone: the daemon's descendants iterator (Sharers) is
	// not loaded for it.
	var objs struct {
		SocketOwners *ebpf.Program `ebpf:"socket_owners"`
	}
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Cache: types}); err != nil {
		return nil, fmt.Errorf("loading the socket owner iterator: %w", memlockHint(err))
	}
	defer objs.SocketOwners.Close()
	var o owners
	err = runIterator(objs.SocketOwners, "iter/task_file", func(r io.Reader) (err error) {
		o, err = readOwners(r)
		return err
	})
	return o, err
}

// runIterator runs an iterator program once (kind names it in errors),
// handing its output to read.
func runIterator(prog *ebpf.Program, kind string, read func(io.Reader) error) error {
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attaching %s: %w", kind, err)
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return fmt.Errorf("running %s: %w", kind, err)
	}
	defer rd.Close()
	if err := read(rd); err != nil {
		return fmt.Errorf("reading %s: %w", kind, err)
	}
	return nil
}

// Layout of struct owner in bpf/owners.bpf.c; TestOwnerDecoderMatchesCLayout
// checks it against bpf2go's generated type.
const (
	offOwnerSock    = 0
	offOwnerInode   = 8
	offOwnerStart   = 16
	offOwnerCgroup  = 24
	offOwnerSAddr   = 32
	offOwnerDAddr   = 48
	offOwnerPID     = 64
	offOwnerNetNS   = 68
	offOwnerFamily  = 72
	offOwnerProto   = 74
	offOwnerSPort   = 76
	offOwnerDPort   = 78
	offOwnerState   = 80
	offOwnerV6Only  = 81
	offOwnerFD      = 84
	offOwnerComm    = 88
	offOwnerSubflow = 104
	ownerSize       = 112
)

var errOwnerLength = errors.New("iterator output is not a whole number of owner records")

// ownersReadSize is how much of the iterator's output is read at once: a
// busy port's tens of thousands of records are decoded as they come, never
// held whole nor copied over and over as a growing buffer would be.
const ownersReadSize = 2048 * ownerSize

// readOwners decodes the owner records r gives, which may end a read in
// the middle of one.
func readOwners(r io.Reader) (owners, error) {
	buf := make([]byte, ownersReadSize)
	var out pieces[owner]
	filled := 0
	for {
		n, err := r.Read(buf[filled:])
		filled += n
		whole := filled - filled%ownerSize
		if err := addOwnerRecords(&out, buf[:whole]); err != nil {
			return nil, err
		}
		filled = copy(buf, buf[whole:filled])
		switch {
		case err == io.EOF && filled != 0:
			return nil, errOwnerLength
		case err == io.EOF:
			return out.join(0), nil
		case err != nil:
			return nil, err
		}
	}
}

// addOwnerRecords decodes whole owner records from raw onto out.
func addOwnerRecords(out *pieces[owner], raw []byte) error {
	if len(raw)%ownerSize != 0 {
		return errOwnerLength
	}
	ne := binary.NativeEndian
	for b := raw; len(b) > 0; b = b[ownerSize:] {
		o := owner{
			sock: ne.Uint64(b[offOwnerSock:]), inode: ne.Uint64(b[offOwnerInode:]), subflow: ne.Uint64(b[offOwnerSubflow:]),
			netns: ne.Uint32(b[offOwnerNetNS:]), proto: tracer.Proto(ne.Uint16(b[offOwnerProto:])),
			state: tracer.State(b[offOwnerState]), v6only: b[offOwnerV6Only] != 0, fd: int32(ne.Uint32(b[offOwnerFD:])),
			process: tracer.Process{PID: ne.Uint32(b[offOwnerPID:]), StartNs: ne.Uint64(b[offOwnerStart:]),
				CgroupID: ne.Uint64(b[offOwnerCgroup:])},
		}
		if o.state >= tracer.StateCount {
			return errBadState
		}
		sport, dport := ne.Uint16(b[offOwnerSPort:]), ne.Uint16(b[offOwnerDPort:])
		switch ne.Uint16(b[offOwnerFamily:]) {
		case unix.AF_INET:
			o.family = tracer.FamilyIPv4
			o.local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[offOwnerSAddr:])), sport)
			o.peer = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[offOwnerDAddr:])), dport)
		case unix.AF_INET6:
			o.family = tracer.FamilyIPv6
			o.local = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[offOwnerSAddr:])), sport)
			o.peer = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[offOwnerDAddr:])), dport)
		default:
			return errBadFamily
		}
		copy(o.process.Comm[:], b[offOwnerComm:offOwnerComm+tracer.CommLen])
		out.add(o)
	}
	return nil
}

// zoneLinkLocal gives link-local addresses of the caller's namespace
// their interface's name (fe80::1%eth0): the address means nothing
// without it.
func zoneLinkLocal(r *snapshot.PortReport, current uint32) {
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if s.NetNS != current || s.Interface == 0 || !s.Local.Addr().IsLinkLocalUnicast() {
			continue
		}
		if ifi, err := net.InterfaceByIndex(int(s.Interface)); err == nil {
			s.Local = netip.AddrPortFrom(s.Local.Addr().WithZone(ifi.Name), s.Local.Port())
		}
	}
}
