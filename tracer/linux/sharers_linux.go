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
// descendants iterator (bpf/owners.bpf.c) lists the owners' descendants in
// one pass over the kernel's tasks; only their descriptors are read, in
// /proc, where who's walk reads every process's.
type Sharers struct {
	// mu makes one search at a time: ancestors is the search's input.
	mu   sync.Mutex
	objs sharersObjects
}

// sharersObjects are what Sharers loads of bpf/owners.bpf.c.
type sharersObjects struct {
	Descendants *ebpf.Program `ebpf:"descendants"`
	Ancestors   *ebpf.Map     `ebpf:"ancestors"`
}

// Limits of a search: past them the owners' descendants are too many to
// read one by one (a supervisor's, init's when systemd passed a socket on),
// and ErrTooManySharers says that who's walk of every process answers
// sooner.
const (
	maxAncestors   = 64 // MAX_ANCESTORS in bpf/owners.bpf.c
	maxDescendants = 64
	maxSharerFDs   = 4096
)

// ErrTooManySharers says that a search would read too many descriptors.
var ErrTooManySharers = errors.New("too many processes descend from the owners to read their descriptors")

// LoadSharers loads the descendants iterator (Linux 5.8, as who's).
func LoadSharers() (*Sharers, error) {
	liftMemlock()
	spec, err := bpf.LoadOwners()
	if err != nil {
		return nil, err
	}
	s := &Sharers{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("loading the descendants iterator: %w", memlockHint(err))
	}
	return s, nil
}

// Close unloads the iterator.
func (s *Sharers) Close() error {
	return errors.Join(s.objs.Descendants.Close(), s.objs.Ancestors.Close())
}

// Holding is one process's descriptor for a socket.
type Holding struct {
	Process proc.Identity
	FD      int32
}

// Find says, of the sockets each owner holds by its events (owned: owner
// to socket inodes), which some descendant of the owner holds too, and
// then every process holding it: the owner when it still does, and the
// descendants. A socket no descendant holds is left out: its owner is its
// only holder, as far as a fork goes.
func (s *Sharers) Find(owned map[proc.Identity][]uint64) (map[uint64][]Holding, error) {
	if len(owned) == 0 {
		return nil, nil
	}
	if len(owned) > maxAncestors {
		return nil, ErrTooManySharers
	}
	descendants, err := s.descendants(owned)
	if err != nil || len(descendants) == 0 {
		return nil, err
	}
	if len(descendants) > maxDescendants {
		return nil, ErrTooManySharers
	}
	// A descendant may hold any owner's socket: a worker's child the
	// master's listener as well as the worker's connection.
	var inodes []uint64
	for _, of := range owned {
		inodes = append(inodes, of...)
	}
	budget := maxSharerFDs
	found := map[uint64][]Holding{}
	for _, d := range descendants {
		if err := readSocketFDs(d, inodes, &budget, found); err != nil {
			return nil, err
		}
	}
	// The owner may have closed its descriptor once a child held one.
	for owner, inodes := range owned {
		shared := slices.DeleteFunc(slices.Clone(inodes), func(inode uint64) bool { return len(found[inode]) == 0 })
		if len(shared) == 0 {
			continue
		}
		if err := readSocketFDs(owner, shared, &budget, found); err != nil {
			return nil, err
		}
	}
	// In pid order, as who's walk lists them.
	for _, h := range found {
		slices.SortFunc(h, func(a, b Holding) int { return cmp.Compare(a.Process.PID, b.Process.PID) })
	}
	return found, nil
}

// Layout of struct descendant in bpf/owners.bpf.c;
// TestDescendantDecoderMatchesCLayout checks it.
const (
	offDescendantStart = 0
	offDescendantPID   = 8
	descendantSize     = 16
)

// descendants runs the iterator for the owners' descendants.
func (s *Sharers) descendants(owned map[proc.Identity][]uint64) ([]proc.Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]uint32, 0, len(owned))
	for owner := range owned {
		keys = append(keys, owner.PID)
	}
	if err := s.setAncestors(keys); err != nil {
		return nil, err
	}
	var found []proc.Identity
	err := runIterator(s.objs.Descendants, "iter/task", func(r io.Reader) error {
		raw, err := io.ReadAll(r)
		if err == nil {
			found, err = decodeDescendants(raw)
		}
		return err
	})
	return found, err
}

// setAncestors makes the ancestors map hold pids alone.
func (s *Sharers) setAncestors(pids []uint32) error {
	var key uint32
	var stale []uint32
	for entries := s.objs.Ancestors.Iterate(); entries.Next(&key, new(uint8)); {
		stale = append(stale, key)
	}
	for _, pid := range stale {
		if err := s.objs.Ancestors.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clearing the ancestors map: %w", err)
		}
	}
	for _, pid := range pids {
		if err := s.objs.Ancestors.Put(pid, uint8(1)); err != nil {
			return fmt.Errorf("filling the ancestors map: %w", err)
		}
	}
	return nil
}

var errDescendantLength = errors.New("iterator output is not a whole number of descendant records")

func decodeDescendants(raw []byte) ([]proc.Identity, error) {
	if len(raw)%descendantSize != 0 {
		return nil, errDescendantLength
	}
	out := make([]proc.Identity, 0, len(raw)/descendantSize)
	for b := raw; len(b) > 0; b = b[descendantSize:] {
		out = append(out, proc.Identity{
			PID:     binary.NativeEndian.Uint32(b[offDescendantPID:]),
			StartNs: binary.NativeEndian.Uint64(b[offDescendantStart:]),
		})
	}
	return out, nil
}

// readSocketFDs adds to found process p's descriptor for each of the
// sockets of inodes it holds (the first, where it has several, as who's
// walk names it), reading at most budget of its descriptors (and taking
// them from budget). A process gone meanwhile holds none.
func readSocketFDs(p proc.Identity, inodes []uint64, budget *int, found map[uint64][]Holding) error {
	want := func(inode uint64) bool { return slices.Contains(inodes, inode) }
	held, n, err := socketFDs(p.PID, want, *budget)
	if *budget -= n; *budget < 0 {
		return ErrTooManySharers
	}
	if err != nil {
		return nil // exited
	}
	for _, h := range held {
		if !slices.ContainsFunc(found[h.inode], func(o Holding) bool { return o.Process.PID == p.PID }) {
			found[h.inode] = append(found[h.inode], Holding{Process: p, FD: h.fd})
		}
	}
	return nil
}
