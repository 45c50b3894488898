package daemon

import (
	"sync"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// unheldSockets are, by port, the TCP sockets no process held in the
// daemon's last snapshot of every socket (TIME_WAIT, orphans closing). The
// loop follows sockets from their events and adopts from a snapshot only
// the held ones: who would not know of these otherwise. It looks them up
// by their ends beside the loop's, and forgets those the kernel no longer
// has. Safe from any goroutine.
type unheldSockets struct {
	mu     sync.Mutex
	byPort map[uint16]map[snapshot.SocketKey]bool
}

// remember replaces what is remembered with r's sockets no process holds.
func (u *unheldSockets) remember(r *snapshot.PortReport) {
	byPort := map[uint16]map[snapshot.SocketKey]bool{}
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if s.Proto != tracer.ProtoTCP || s.Held() || s.State == tracer.StateListen {
			continue
		}
		k := snapshot.KeyOf(s.NetNS, s.Local, s.Remote)
		for _, port := range []uint16{k.Local.Port(), k.Remote.Port()} {
			if byPort[port] == nil {
				byPort[port] = map[snapshot.SocketKey]bool{}
			}
			byPort[port][k] = true
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.byPort = byPort
}

// on lists the remembered sockets on port in the network namespace netns.
func (u *unheldSockets) on(port uint16, netns uint32) []snapshot.SocketKey {
	u.mu.Lock()
	defer u.mu.Unlock()
	var keys []snapshot.SocketKey
	for k := range u.byPort[port] {
		if k.NetNS == netns {
			keys = append(keys, k)
		}
	}
	return keys
}

// forget drops sockets the kernel no longer has.
func (u *unheldSockets) forget(gone []snapshot.SocketKey) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, k := range gone {
		for _, port := range []uint16{k.Local.Port(), k.Remote.Port()} {
			delete(u.byPort[port], k)
			if len(u.byPort[port]) == 0 {
				delete(u.byPort, port)
			}
		}
	}
}
