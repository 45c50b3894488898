package daemon

import (
	"sync"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// unheldPorts says, per network namespace, which ports had TCP sockets no
// process held (TIME_WAIT, orphans closing) in the daemon's last snapshot
// of every socket. The loop follows sockets from their events and adopts
// from a snapshot only the held ones, so who asks the kernel for a port's
// unheld sockets (a walk of every TCP socket) only where the snapshot had
// some it may not know: a bit a port, 8 KiB a namespace, however many
// sockets a storm left in TIME_WAIT. Safe from any goroutine.
type unheldPorts struct {
	mu   sync.Mutex
	byNS map[uint32]*portSet
}

// portSet is a set of ports, a bit each.
type portSet [1 << 16 / 64]uint64

func (s *portSet) add(port uint16)      { s[port/64] |= 1 << (port % 64) }
func (s *portSet) has(port uint16) bool { return s[port/64]&(1<<(port%64)) != 0 }
func (s *portSet) remove(port uint16)   { s[port/64] &^= 1 << (port % 64) }

// remember replaces what is remembered with the ports of r's TCP sockets
// no process holds, both their ends.
func (u *unheldPorts) remember(r *snapshot.PortReport) {
	byNS := map[uint32]*portSet{}
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if s.Proto != tracer.ProtoTCP || s.Held() || s.State == tracer.StateListen {
			continue
		}
		set := byNS[s.NetNS]
		if set == nil {
			set = &portSet{}
			byNS[s.NetNS] = set
		}
		set.add(s.Local.Port())
		set.add(s.Remote.Port())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.byNS = byNS
}

// has says whether port had unheld sockets in netns.
func (u *unheldPorts) has(netns uint32, port uint16) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	set := u.byNS[netns]
	return set != nil && set.has(port)
}

// forget says port has none left in netns that the loop does not know.
func (u *unheldPorts) forget(netns uint32, port uint16) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if set := u.byNS[netns]; set != nil {
		set.remove(port)
	}
}
