package tracer

import (
	"context"
	"fmt"
)

// Handler consumes a source's events. A source calls it from one goroutine
// only, so a Handler needs no locking.
type Handler interface {
	// Handle receives one event. The event is only valid during the call.
	Handle(ev *Event)
	// Tick tells the handler the time (same clock as Event.TimeNs) up to
	// which the source has delivered every event, after a batch of them or
	// when none came, so that decisions waiting on later events can be
	// taken by a deadline instead. It returns the time the handler must be
	// ticked at again even if no event comes (once the source has
	// delivered every event up to it), or NoDeadline: an idle source then
	// sleeps until the next event.
	Tick(nowNs int64) (nextNs int64)
}

// NoDeadline is what Tick returns when only an event can give the handler
// or sink work to do.
const NoDeadline = int64(0)

// EarlierDeadline is the earlier of two deadlines, either of which may be
// NoDeadline.
func EarlierDeadline(a, b int64) int64 {
	if a == NoDeadline || (b != NoDeadline && b < a) {
		return b
	}
	return a
}

// Sink consumes the correlator's records: the printer of a watch, and the
// index, history and metrics of a daemon. The event loop calls it from its
// one goroutine. A sink must never block that loop: one that cannot keep
// up drops and counts what it drops.
type Sink interface {
	// Record receives one record, valid only during the call.
	Record(r *Record)
	// Tick says the source has delivered every event up to this time (on
	// the events' clock; see Handler): the moment to flush what is
	// buffered. It returns when the sink must be ticked again even if no
	// record comes (work it holds back for a while), or NoDeadline.
	Tick(nowNs int64) (nextNs int64)
}

// ConnectionSink consumes connection lines, one per connection when it
// ends (a watch with --connections), from the event loop's goroutine as
// a Sink does.
type ConnectionSink interface {
	// Connection receives one connection, valid only during the call.
	Connection(c *Connection)
	// Tick is Sink's.
	Tick(nowNs int64) (nextNs int64)
}

// Output takes either kind of line: what a watch shows, counts and prints.
type Output interface {
	Sink
	Connection(c *Connection)
}

// Source is one platform's stream of kernel events: eBPF on Linux, ETW on
// Windows.
type Source interface {
	// Run delivers events to h until ctx is done (it then returns nil) or
	// the source fails.
	Run(ctx context.Context, h Handler) error
	// Lost returns how many events the kernel dropped.
	Lost() Lost
	// Hooks describes each hook that was attached and why it was chosen.
	Hooks() []string
	// Close detaches everything the source attached.
	Close() error
}

// Lost counts events lost in the kernel, by cause.
type Lost struct {
	// Dropped found the kernel's buffer full: porttrace did not read fast
	// enough. They are events of the watched ports: the programs filter
	// before they reserve room.
	Dropped uint64
	// Skipped are runs of a probe the kernel did not make because a run of
	// it was already under way on that CPU (a softirq interrupting it), and
	// that nothing made up for. The kernel does not say which port they
	// were for: most are of other ports' traffic.
	Skipped uint64
	// Undecodable reached porttrace but did not decode: a kernel side
	// that does not match this porttrace.
	Undecodable uint64
}

// Total is every event lost.
func (l Lost) Total() uint64 { return l.Dropped + l.Skipped + l.Undecodable }

// OfWatchedPorts is the events lost that are known to be of the watched
// ports: all but the skipped runs.
func (l Lost) OfWatchedPorts() uint64 { return l.Dropped + l.Undecodable }

// ProbeMode chooses between hook families where a kernel offers several.
type ProbeMode uint8

const (
	// ProbeAuto takes, for each hook, the best one the kernel has.
	ProbeAuto ProbeMode = iota
	// ProbeTracepoint uses only tracepoints (tp_btf, raw_tp, tracepoint).
	ProbeTracepoint
	// ProbeKprobe uses kprobes wherever a kprobe form of a hook exists.
	ProbeKprobe
)

func (m ProbeMode) String() string {
	switch m {
	case ProbeTracepoint:
		return "tracepoint"
	case ProbeKprobe:
		return "kprobe"
	}
	return "auto"
}

// ParseProbeMode reads the --probe flag.
func ParseProbeMode(s string) (ProbeMode, error) {
	for _, m := range []ProbeMode{ProbeAuto, ProbeTracepoint, ProbeKprobe} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("invalid probe mode %q: want auto, tracepoint or kprobe", s)
}

// DefaultBufferSize is the kernel buffer's default size: on Linux, the
// ring buffer that holds a burst, with room for about 100,000 events (168
// bytes each with the ring's header), most of a second of a connection
// storm on a small machine, and what 20,000 connections opened at once emit
// faster than the reader reads (4 MiB lost a fifth of those). The programs
// write to it only from the moment a 2 MiB ring in front of it is full
// until the reader has read it to its end: a ring this size is written a
// line the caches have long evicted at each event, which cost a storm 1-2%
// (BENCHMARKS.md, thirteenth and fourteenth sessions).
const DefaultBufferSize = 16 << 20

// Config says what a source watches.
type Config struct {
	// Ports are the ports to watch at either end of a socket; empty
	// watches every port.
	Ports Ports
	// Family restricts the watch to one address family; 0 watches both.
	Family Family
	// Probe chooses the hook family.
	Probe ProbeMode
	// BufferSize is the size in bytes of the kernel buffer events wait in
	// for porttrace to read them; 0 takes the platform's default.
	BufferSize int
	// Logf, when set, receives verbose diagnostics (which hooks and why).
	Logf func(format string, args ...any)
	// Warnf, when set, receives what the watch will not show and why (a
	// hook that could not be attached, naming the missing privilege or
	// kernel feature), to be said without being asked.
	Warnf func(format string, args ...any)
}

// Warningf passes a warning to Warnf, if set.
func (c *Config) Warningf(format string, args ...any) {
	if c.Warnf != nil {
		c.Warnf(format, args...)
	}
}

// Verbosef passes a diagnostic to Logf, if set.
func (c *Config) Verbosef(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// Waker is a Source whose Run may sleep until the next event or the
// handler's deadline (Linux: on the ring buffer). Work handed to the event
// loop from another goroutine (a snapshot to reconcile with) must not wait
// for the next event, which on a quiet host may be minutes away: Wake,
// safe from any goroutine, makes Run tick its handler at once. (A source
// that ticks on a timer needs none.)
type Waker interface {
	Wake()
}

// HolderFinder is a Source that can name, off the event path, the
// processes holding sockets now (Linux: the in-kernel walk of every
// process's open files). The event loop asks it when a socket's owner has
// exited and the socket lives on: a daemon that forked after listen(), a
// socket passed to another process.
type HolderFinder interface {
	// FindHolders lists the processes holding the sockets asked about. It
	// may take milliseconds: it is called from a goroutine of its own.
	FindHolders(socks []HolderQuery) ([]Holder, error)
}

// HolderQuery asks who holds a socket: the one open files refer to (for an
// MPTCP subflow, its MPTCP socket), with its local port, which narrows the
// search.
type HolderQuery struct {
	Sock SockID
	Port uint16
}

// Holder is a process holding a socket.
type Holder struct {
	Sock SockID
	Process
}
