// Package top is porttrace top's model: a sink that counts, per port and
// owning process, the connections opened and closed and the binds that
// failed, and the table that joins those counts with the sockets the
// event loop's index lists. It formats that table as plain text; the
// terminal screen is the command's.
package top

import (
	"sync/atomic"

	"github.com/porttrace/porttrace/tracer"
)

// publishIntervalNs bounds how often the sink copies its counts for the
// screen, which reads them about once a second.
const publishIntervalNs = int64(250e6)

// Key is a row of the table: a port, a network namespace and a process.
// The port is the one the socket serves (see ServicePort); PID 0 is a
// socket whose owner is unknown. The namespace tells apart the same port
// in two containers.
type Key struct {
	Port    uint16
	NetNS   uint32
	PID     uint32
	StartNs uint64
}

// Counts are what the sink counted for one row since the watch began.
type Counts struct {
	// Comm is the process's name as the last record gave it.
	Comm tracer.Comm
	// Opened counts connections that reached ESTABLISHED, Closed those
	// that left it.
	Opened, Closed uint64
	// BindFailures counts failed binds, and LastBindErr is the errno of
	// the last one.
	BindFailures uint64
	LastBindErr  int32
}

// Snapshot is the sink's counts at one moment, immutable once published.
type Snapshot struct {
	AtNs int64
	Rows map[Key]Counts
}

// Sink counts records by row on the event loop's goroutine and publishes
// a copy of its counts for the screen's goroutine, at most every
// publishIntervalNs: the two share nothing else.
type Sink struct {
	watched     tracer.Ports
	rows        map[Key]*Counts
	changed     bool
	publishedNs int64
	published   atomic.Pointer[Snapshot]
}

var _ tracer.Sink = (*Sink)(nil)

// NewSink returns a sink for a watch of these ports (empty: every port).
func NewSink(watched tracer.Ports) *Sink {
	s := &Sink{watched: watched, rows: make(map[Key]*Counts)}
	s.published.Store(&Snapshot{Rows: map[Key]Counts{}})
	return s
}

// ServicePort is the port a socket is counted under: the watched one of
// its two ends; else, for a connection's client end, the port it connected
// to; else its own. A server's connections and its clients' then fall
// under the server's port, not under ephemeral ones.
func ServicePort(local, remote uint16, role tracer.Role, watched tracer.Ports) uint16 {
	if len(watched) > 0 && !watched.Contains(local) && watched.Contains(remote) {
		return remote
	}
	if len(watched) == 0 && role == tracer.RoleClient && remote != 0 {
		return remote
	}
	return local
}

// Record implements tracer.Sink.
func (s *Sink) Record(r *tracer.Record) {
	var opened, closed, bindFailed bool
	switch r.Type {
	case tracer.RecordState:
		opened = r.New == tracer.StateEstablished
		closed = r.Old == tracer.StateEstablished && r.New != tracer.StateEstablished
	case tracer.RecordBind:
		bindFailed = r.Err != 0
	}
	if !opened && !closed && !bindFailed {
		return
	}
	key := Key{Port: ServicePort(r.SPort, r.DPort, r.Role, s.watched), NetNS: r.NetNS, PID: r.PID, StartNs: r.StartNs}
	c := s.rows[key]
	if c == nil {
		c = &Counts{}
		s.rows[key] = c
	}
	c.Comm = r.Comm
	switch {
	case opened:
		c.Opened++
	case closed:
		c.Closed++
	default:
		c.BindFailures++
		c.LastBindErr = r.Err
	}
	s.changed = true
}

// Tick implements tracer.Sink: it publishes the counts if they changed
// and the last copy is old enough, else asks for the tick that will.
func (s *Sink) Tick(nowNs int64) int64 {
	if !s.changed {
		return tracer.NoDeadline
	}
	if nowNs-s.publishedNs < publishIntervalNs {
		return s.publishedNs + publishIntervalNs
	}
	rows := make(map[Key]Counts, len(s.rows))
	for k, c := range s.rows {
		rows[k] = *c
	}
	s.published.Store(&Snapshot{AtNs: nowNs, Rows: rows})
	s.publishedNs, s.changed = nowNs, false
	return tracer.NoDeadline
}

// Snapshot returns the latest published counts. Safe from any goroutine.
func (s *Sink) Snapshot() *Snapshot { return s.published.Load() }
