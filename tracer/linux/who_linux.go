package linux

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"

	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

// Who answers "who owns this port?" from one in-kernel walk of every
// process's open files, which writes out only the sockets bound to the port
// with their holders, and one sock_diag look at the port's sockets that no
// process holds (TIME_WAIT, orphans). Neither reads /proc for processes
// that hold nothing on the port, and neither answer grows with sockets on
// other ports.
func Who(port uint16) (*snapshot.PortReport, error) {
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	// The two looks are independent kernel walks: run them together.
	var orphans []snapshot.PortSocket
	var orphansErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		orphans, orphansErr = diagOrphans(port)
	}()
	owners, err := socketOwners(port)
	<-done
	if err != nil {
		return nil, err
	}
	r := &snapshot.PortReport{Port: port, Processes: map[uint32]*snapshot.Process{}}
	switch {
	case errors.Is(orphansErr, unix.ENOENT):
		// The kernel has no TCP sock_diag (inet_diag and tcp_diag not
		// loaded, or not built): say what the report lacks.
		r.Notes = append(r.Notes, "TIME_WAIT and orphaned sockets not shown: this kernel has no TCP sock_diag (load the tcp_diag module)")
	case orphansErr != nil:
		return nil, orphansErr
	}
	// sock_diag answers for porttrace's own network namespace.
	var ns unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &ns); err != nil {
		return nil, fmt.Errorf("reading the network namespace: %w", err)
	}
	held := addOwners(r, owners)
	for _, s := range orphans {
		// A closing socket a process still holds was listed with it.
		if s.Inode == 0 || !held[s.Inode] {
			s.NetNS = uint32(ns.Ino)
			r.Sockets = append(r.Sockets, s)
		}
	}
	for _, p := range owners.processes() {
		r.Processes[p.PID] = describeProcess(p)
	}
	return r, nil
}

// owner is one socket held by one process, as the iterator writes it.
type owner struct {
	sock, inode uint64
	netns       uint32
	family      tracer.Family
	proto       tracer.Proto
	state       tracer.State
	local, peer netip.AddrPort
	v6only      bool
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

// addOwners lists in r the iterator's sockets, each once with every process
// holding it, and returns the inodes it listed.
func addOwners(r *snapshot.PortReport, os owners) map[uint64]bool {
	byInode := map[uint64]int{}
	for _, o := range os {
		i, ok := byInode[o.inode]
		if !ok {
			r.Sockets = append(r.Sockets, snapshot.PortSocket{
				Proto: o.proto, Family: o.family, State: o.state, Local: o.local, Remote: o.peer,
				V6Only: o.v6only, Inode: o.inode, NetNS: o.netns, Sock: tracer.SockID(o.sock),
			})
			i = len(r.Sockets) - 1
			byInode[o.inode] = i
		}
		if s := &r.Sockets[i]; !slices.Contains(s.PIDs, o.process.PID) {
			s.PIDs = append(s.PIDs, o.process.PID)
		}
	}
	held := make(map[uint64]bool, len(byInode))
	for inode := range byInode {
		held[inode] = true
	}
	return held
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
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK for eBPF: %w", err)
	}
	spec, err := bpf.LoadOwners()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[bpf.OwnersVarOwnerPort].Set(port); err != nil {
		return nil, fmt.Errorf("setting owner_port: %w", err)
	}
	var objs bpf.OwnersObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("loading the socket owner iterator: %w", err)
	}
	defer objs.Close()
	it, err := link.AttachIter(link.IterOptions{Program: objs.SocketOwners})
	if err != nil {
		return nil, fmt.Errorf("attaching iter/task_file: %w", err)
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("running iter/task_file: %w", err)
	}
	defer rd.Close()
	raw, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("reading iter/task_file: %w", err)
	}
	return decodeOwners(raw)
}

// Layout of struct owner in bpf/owners.bpf.c; TestOwnerDecoderMatchesCLayout
// checks it against bpf2go's generated type.
const (
	offOwnerSock   = 0
	offOwnerInode  = 8
	offOwnerStart  = 16
	offOwnerCgroup = 24
	offOwnerSAddr  = 32
	offOwnerDAddr  = 48
	offOwnerPID    = 64
	offOwnerNetNS  = 68
	offOwnerFamily = 72
	offOwnerProto  = 74
	offOwnerSPort  = 76
	offOwnerDPort  = 78
	offOwnerState  = 80
	offOwnerV6Only = 81
	offOwnerComm   = 88
	ownerSize      = 104
)

var errOwnerLength = errors.New("iterator output is not a whole number of owner records")

func decodeOwners(raw []byte) (owners, error) {
	if len(raw)%ownerSize != 0 {
		return nil, errOwnerLength
	}
	ne := binary.NativeEndian
	out := make(owners, 0, len(raw)/ownerSize)
	for b := raw; len(b) > 0; b = b[ownerSize:] {
		o := owner{
			sock: ne.Uint64(b[offOwnerSock:]), inode: ne.Uint64(b[offOwnerInode:]),
			netns: ne.Uint32(b[offOwnerNetNS:]), proto: tracer.Proto(ne.Uint16(b[offOwnerProto:])),
			state: tracer.State(b[offOwnerState]), v6only: b[offOwnerV6Only] != 0,
			process: tracer.Process{PID: ne.Uint32(b[offOwnerPID:]), StartNs: ne.Uint64(b[offOwnerStart:]),
				CgroupID: ne.Uint64(b[offOwnerCgroup:])},
		}
		if o.state >= tracer.StateCount {
			return nil, errBadState
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
			return nil, errBadFamily
		}
		copy(o.process.Comm[:], b[offOwnerComm:offOwnerComm+tracer.CommLen])
		out = append(out, o)
	}
	return out, nil
}

// describeProcess reads what /proc says of one process the iterator
// found. A process that has exited since keeps what the iterator saw.
func describeProcess(proc tracer.Process) *snapshot.Process {
	p := &snapshot.Process{PID: proc.PID, Comm: proc.Comm.String(), StartNs: proc.StartNs, CgroupID: proc.CgroupID}
	dir := "/proc/" + strconv.FormatUint(uint64(proc.PID), 10)
	p.Exe, _ = os.Readlink(dir + "/exe")
	if cmdline, err := os.ReadFile(dir + "/cmdline"); err == nil {
		p.Cmdline = strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	if uid, ok := statusUID(dir + "/status"); ok {
		p.User = uid
		if u, err := user.LookupId(uid); err == nil {
			p.User = u.Username
		}
	}
	return p
}

// statusUID reads the real uid from /proc/PID/status ("Uid:\t0\t0\t0\t0").
func statusUID(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			if fields := strings.Fields(rest); len(fields) > 0 {
				return fields[0], true
			}
		}
	}
	return "", false
}
