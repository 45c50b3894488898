package linux

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/porttrace/porttrace/bpf"
	"github.com/porttrace/porttrace/tracer/proc"
)

// Sharers finds who else holds the sockets whose owners the daemon knows
// from events (the process that bound, listened or accepted). A fork
// leaves a descriptor with the child too: a pre-fork server's workers
// hold their master's listener, and a master that accepts and forks (sshd,
// PostgreSQL) hands the connection to a child, closing its own. The
// held_sockets iterator (bpf/owners.bpf.c) reads, in one pass over the
// kernel's tasks, the descriptor tables of the owners' descendants only,
// where who's walk reads every process's; it needs no /proc, whose
// descriptor links another user's process keeps from a daemon without
// CAP_DAC_READ_SEARCH.
type Sharers struct {
	// mu makes one search at a time: subjects is the search's input.
	mu   sync.Mutex
	objs sharersObjects
}

// sharersObjects are what Sharers loads of bpf/owners.bpf.c.
type sharersObjects struct {
	SocketRefs  *ebpf.Program `ebpf:"socket_refs"`
	RefSocks    *ebpf.Map     `ebpf:"ref_socks"`
	HeldSockets *ebpf.Program `ebpf:"held_sockets"`
	Subjects    *ebpf.Map     `ebpf:"subjects"`
}

// What the iterator reads of a process in subjects (enum subject_scan).
const (
	scanDescendants uint8 = 1
	scanSelf        uint8 = 2
)

// ErrSearchIncomplete says that the search cannot name every holder, and
// who's walk of every process must: the owners are too many, a process to
// read has more descriptors than the iterator reads (MAX_FD_SLOTS), or a
// socket's one descriptor is in no table the search reads.
var ErrSearchIncomplete = errors.New("the search for the processes sharing the owners' sockets cannot name them all")

// LoadSharers loads the socket_refs and held_sockets iterators (Linux
// 5.9, a year after who's).
func LoadSharers() (*Sharers, error) {
	liftMemlock()
	spec, err := bpf.LoadOwners()
	if err != nil {
		return nil, err
	}
	s := &Sharers{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("loading the socket_refs and held_sockets iterators: %w", memlockHint(err))
	}
	return s, nil
}

// Close unloads the iterators.
func (s *Sharers) Close() error {
	return errors.Join(s.objs.SocketRefs.Close(), s.objs.RefSocks.Close(), s.objs.HeldSockets.Close(), s.objs.Subjects.Close())
}

// OwnedSocket is a socket as the daemon's index knows it.
type OwnedSocket struct {
	// Sock is the kernel's struct sock, as the tracer's events name it.
	Sock  uint64
	Inode uint64
}

// Holding is one process's descriptor for a socket.
type Holding struct {
	Process proc.Identity
	FD      int32
}

// Find says, of the sockets each owner holds by its events, every process
// holding them: the owner when it still does, and its descendants
// (through a fork), in pid order with each one's first descriptor, as
// who's walk lists them. A socket with several descriptors, none of them
// a descendant's, is left out: they are its owner's, whose table the
// search did not read for it.
//
// A socket's file counts its descriptors (socket_refs). With one, it is
// the owner's, or, where a master accepted, forked and closed its copy
// (PostgreSQL, sshd), a descendant's: the owner's table is read, and its
// descendants' only where the owner no longer holds it. With more, the
// descendants' tables are read, and the owner's where one of them shares
// it. A busy owner's children are thus read only for a socket that is
// shared. ErrSearchIncomplete says that who's walk must answer instead.
func (s *Sharers) Find(owned map[proc.Identity][]OwnedSocket) (map[uint64][]Holding, error) {
	var socks []uint64
	for _, of := range owned {
		for _, o := range of {
			if !slices.Contains(socks, o.Sock) { // an MPTCP socket's subflows
				socks = append(socks, o.Sock)
			}
		}
	}
	if len(socks) == 0 {
		return nil, nil
	}
	if len(socks) > int(s.objs.RefSocks.MaxEntries()) || len(owned) > int(s.objs.Subjects.MaxEntries()) {
		return nil, ErrSearchIncomplete
	}
	refs, err := s.refs(socks)
	if err != nil {
		return nil, err
	}
	// single: the socket has one descriptor. A count read of another
	// socket (the struct sock reused since the loop saw it) says nothing.
	single := func(o OwnedSocket) bool {
		r := refs[o.Sock]
		return r.count == 1 && r.inode == o.Inode
	}
	found := map[uint64][]Holding{}
	read := map[uint32]uint8{} // what has been read of each owner
	search := func(subjects map[uint32]uint8) error {
		held, err := s.scan(subjects)
		for pid, scan := range subjects {
			read[pid] |= scan
		}
		for _, h := range held {
			if !slices.ContainsFunc(found[h.inode], func(o Holding) bool { return o.Process.PID == h.Process.PID }) {
				found[h.inode] = append(found[h.inode], h.Holding)
			}
		}
		return err
	}
	// wants is what to read of o's owner: in the first pass, its own table
	// for a socket with one descriptor, its descendants' for one with
	// more; in the second, its descendants' where it no longer holds the
	// one descriptor, its own where another holds one of several.
	wants := func(o OwnedSocket, owner uint32, first bool) uint8 {
		holders := found[o.Inode]
		switch {
		case first && single(o):
			return scanSelf
		case first:
			return scanDescendants
		case single(o) && !slices.ContainsFunc(holders, func(h Holding) bool { return h.Process.PID == owner }):
			return scanDescendants
		case !single(o) && len(holders) > 0:
			return scanSelf
		}
		return 0
	}
	for _, first := range []bool{true, false} {
		subjects := map[uint32]uint8{}
		for owner, of := range owned {
			for _, o := range of {
				if want := wants(o, owner.PID, first) &^ read[owner.PID]; want != 0 {
					subjects[owner.PID] |= want
				}
			}
		}
		if len(subjects) > 0 {
			if err := search(subjects); err != nil {
				return nil, err
			}
		}
	}
	// The tables read list every socket of their processes: keep the
	// owners'.
	holding := map[uint64][]Holding{}
	for _, of := range owned {
		for _, o := range of {
			holders := found[o.Inode]
			switch {
			case single(o) && len(holders) == 0:
				// Its one descriptor is neither the owner's nor a
				// descendant's: passed over a unix socket, or left to
				// a sibling by an owner that exited.
				return nil, ErrSearchIncomplete
			case len(holders) > 0:
				slices.SortFunc(holders, func(a, b Holding) int { return cmp.Compare(a.Process.PID, b.Process.PID) })
				holding[o.Inode] = holders
			}
		}
	}
	return holding, nil
}

// heldSocket is one record of the iterator.
type heldSocket struct {
	Holding
	inode uint64
}

// Layout of struct held_socket in bpf/owners.bpf.c;
// TestHeldSocketDecoderMatchesCLayout checks it.
const (
	offHeldStart   = 0
	offHeldInode   = 8
	offHeldPID     = 16
	offHeldFD      = 20
	heldSocketSize = 24
)

// Layout of struct sock_refs in bpf/owners.bpf.c;
// TestSockRefsDecoderMatchesCLayout checks it.
const (
	offRefsSock  = 0
	offRefsCount = 8
	offRefsInode = 16
	sockRefsSize = 24
)

// sockRefs is what socket_refs says of a struct sock: its file's
// references, and the inode of the socket it is now.
type sockRefs struct {
	count, inode uint64
}

// refs reads the reference counts of socks' files.
func (s *Sharers) refs(socks []uint64) (map[uint64]sockRefs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The iterator reads up to the first 0, or the whole map.
	for i := range min(len(socks)+1, int(s.objs.RefSocks.MaxEntries())) {
		var sock uint64
		if i < len(socks) {
			sock = socks[i]
		}
		if err := s.objs.RefSocks.Put(uint32(i), sock); err != nil {
			return nil, fmt.Errorf("filling map %s: %w", s.objs.RefSocks, err)
		}
	}
	var refs map[uint64]sockRefs
	err := runIterator(s.objs.SocketRefs, "iter/task", func(r io.Reader) error {
		raw, err := io.ReadAll(r)
		if err == nil {
			refs, err = decodeSockRefs(raw)
		}
		return err
	})
	return refs, err
}

var errSockRefsLength = errors.New("iterator output is not a whole number of sock_refs records")

func decodeSockRefs(raw []byte) (map[uint64]sockRefs, error) {
	if len(raw)%sockRefsSize != 0 {
		return nil, errSockRefsLength
	}
	refs := make(map[uint64]sockRefs, len(raw)/sockRefsSize)
	for b := raw; len(b) > 0; b = b[sockRefsSize:] {
		refs[binary.NativeEndian.Uint64(b[offRefsSock:])] = sockRefs{
			count: binary.NativeEndian.Uint64(b[offRefsCount:]),
			inode: binary.NativeEndian.Uint64(b[offRefsInode:]),
		}
	}
	return refs, nil
}

// scan runs the iterator for subjects (pid to what to read of it).
func (s *Sharers) scan(subjects map[uint32]uint8) ([]heldSocket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pids, scans := make([]uint32, 0, len(subjects)), make([]uint8, 0, len(subjects))
	for pid, scan := range subjects {
		pids, scans = append(pids, pid), append(scans, scan)
	}
	if err := setKeys(s.objs.Subjects, pids, scans); err != nil {
		return nil, err
	}
	var held []heldSocket
	err := runIterator(s.objs.HeldSockets, "iter/task", func(r io.Reader) error {
		raw, err := io.ReadAll(r)
		if err == nil {
			held, err = decodeHeldSockets(raw)
		}
		return err
	})
	return held, err
}

// setKeys makes m hold keys alone, with values.
func setKeys[K comparable, V any](m *ebpf.Map, keys []K, values []V) error {
	var key K
	var stale []K
	entries := m.Iterate()
	for entries.Next(&key, new(V)) {
		if !slices.Contains(keys, key) {
			stale = append(stale, key)
		}
	}
	if err := entries.Err(); err != nil {
		return fmt.Errorf("reading map %s: %w", m, err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clearing map %s: %w", m, err)
		}
	}
	for i, k := range keys {
		if err := m.Put(k, values[i]); err != nil {
			return fmt.Errorf("filling map %s: %w", m, err)
		}
	}
	return nil
}

var errHeldSocketLength = errors.New("iterator output is not a whole number of held_socket records")

// decodeHeldSockets decodes the iterator's records; a process with more
// descriptors than it reads makes ErrSearchIncomplete.
func decodeHeldSockets(raw []byte) ([]heldSocket, error) {
	if len(raw)%heldSocketSize != 0 {
		return nil, errHeldSocketLength
	}
	out := make([]heldSocket, 0, len(raw)/heldSocketSize)
	for b := raw; len(b) > 0; b = b[heldSocketSize:] {
		h := heldSocket{
			Holding: Holding{
				Process: proc.Identity{PID: binary.NativeEndian.Uint32(b[offHeldPID:]), StartNs: binary.NativeEndian.Uint64(b[offHeldStart:])},
				FD:      int32(binary.NativeEndian.Uint32(b[offHeldFD:])),
			},
			inode: binary.NativeEndian.Uint64(b[offHeldInode:]),
		}
		if h.FD < 0 {
			return nil, ErrSearchIncomplete
		}
		out = append(out, h)
	}
	return out, nil
}
