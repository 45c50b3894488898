package correlate

import (
	"iter"
	"net/netip"
	"slices"

	"github.com/porttrace/porttrace/tracer"
)

// Owned is one socket the correlator knows the owner of, as readers of the
// published index see it.
type Owned struct {
	Proto  tracer.Proto
	Family tracer.Family
	State  tracer.State
	// SinceNs is when it entered State (events' clock), 0 if porttrace
	// did not see it (a socket older than the watch).
	SinceNs int64
	// TimeWait marks a timewait socket: a connection no process holds any
	// more, whose owner only a tracer can remember.
	TimeWait bool
	NetNS    uint32
	Local    netip.AddrPort
	Remote   netip.AddrPort
	// Inode names the socket in snapshots, 0 where unknown: what tells
	// apart listeners that share their ends (SO_REUSEPORT).
	Inode uint64
	// Sock is the socket its owner's descriptor names (the MPTCP socket
	// of a subflow), as the kernel's events name it.
	Sock tracer.SockID
	// Process is the owner: its start time tells it from a later process
	// given the same pid.
	Process tracer.Process
	Via     tracer.OwnerVia
	// Role is which end of its connection the socket is, where known.
	Role tracer.Role
	// Exited says the owner has exited: the socket outlived it.
	Exited bool
}

// Index is what the event loop publishes for readers on other goroutines
// (the local API, who): an immutable copy, never the correlator itself.
type Index struct {
	// AtNs is when it was built, on the events' clock.
	AtNs  int64
	Stats Stats
	// sockets are sorted by local port; byRemote indexes them by remote
	// port. unowned are the timewait sockets whose owner porttrace never
	// saw, which who and the API, asked for owners, leave out.
	sockets  []Owned
	byRemote []int32
	unowned  []Owned
}

func newIndex(atNs int64, stats Stats, sockets, unowned []Owned) *Index {
	slices.SortFunc(sockets, func(a, b Owned) int { return int(a.Local.Port()) - int(b.Local.Port()) })
	byRemote := make([]int32, len(sockets))
	for i := range byRemote {
		byRemote[i] = int32(i)
	}
	slices.SortFunc(byRemote, func(a, b int32) int { return int(sockets[a].Remote.Port()) - int(sockets[b].Remote.Port()) })
	return &Index{AtNs: atNs, Stats: stats, sockets: sockets, byRemote: byRemote, unowned: unowned}
}

// OnPort yields the sockets on both sides of port, as who shows them:
// those whose local port it is (listeners, accepted connections), then
// those connected to it from this host (clients, their TIME_WAIT). A
// socket with port at both ends comes once. They are the index's own,
// not copies (a busy port has tens of thousands): readers must not change
// them.
func (x *Index) OnPort(port uint16) iter.Seq[*Owned] {
	return func(yield func(*Owned) bool) {
		if x == nil {
			return
		}
		local := x.ByLocalPort(port)
		for i := range local {
			if !yield(&local[i]) {
				return
			}
		}
		lo, _ := slices.BinarySearchFunc(x.byRemote, port, func(i int32, p uint16) int { return int(x.sockets[i].Remote.Port()) - int(p) })
		for _, i := range x.byRemote[lo:] {
			o := &x.sockets[i]
			if o.Remote.Port() != port {
				return
			}
			if o.Local.Port() != port && !yield(o) {
				return
			}
		}
	}
}

// ByLocalPort returns the sockets whose local port is port. The slice is
// shared: readers must not change it.
func (x *Index) ByLocalPort(port uint16) []Owned {
	if x == nil {
		return nil
	}
	lo, _ := slices.BinarySearchFunc(x.sockets, port, func(o Owned, p uint16) int { return int(o.Local.Port()) - int(p) })
	hi := lo
	for hi < len(x.sockets) && x.sockets[hi].Local.Port() == port {
		hi++
	}
	return x.sockets[lo:hi:hi]
}

// Sockets returns every socket the index holds, sorted by local port. The
// slice is shared: readers must not change it.
func (x *Index) Sockets() []Owned {
	if x == nil {
		return nil
	}
	return x.sockets[:len(x.sockets):len(x.sockets)]
}

// Unowned returns the timewait sockets whose owner porttrace never saw
// (they ended before the trace began): counted by state (top, the
// metrics), never named as anyone's. The slice is shared: readers must not
// change it.
func (x *Index) Unowned() []Owned {
	if x == nil {
		return nil
	}
	return x.unowned[:len(x.unowned):len(x.unowned)]
}

// EverySocket yields the sockets whose owner is known, then the unowned
// timewait ones: what counts sockets by state (top, the metrics) reads.
// They are the index's own: readers must not change them.
func (x *Index) EverySocket() iter.Seq[*Owned] {
	return func(yield func(*Owned) bool) {
		for _, list := range [][]Owned{x.Sockets(), x.Unowned()} {
			for i := range list {
				if !yield(&list[i]) {
					return
				}
			}
		}
	}
}

// Len is how many sockets the index holds.
func (x *Index) Len() int {
	if x == nil {
		return 0
	}
	return len(x.sockets)
}
