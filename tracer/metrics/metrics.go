// Package metrics exports what porttrace sees as Prometheus metrics, in
// Prometheus's text exposition format.
//
// # Use
//
//	m := metrics.New(metrics.Options{Index: loop.Index, Lost: src.Lost})
//	loop := correlate.NewLoop(printer, store, m)  // m is a tracer.Sink
//	http.Handle("/metrics", m.Handler())
//
// The event loop calls Record: it only adds to atomic counters and
// histogram buckets (allocating the first time a failed bind's label set
// appears, never after), so in steady state it allocates nothing, makes no
// system call and never blocks. The gauges are read at scrape
// time from the index the loop publishes, never from the loop itself.
//
// # Metrics
//
//	porttrace_tcp_sockets{port,state}                  gauge: sockets by state per listening port
//	porttrace_tcp_state_transitions_total{from,to}     counter
//	porttrace_tcp_handshake_duration_seconds{side}     histogram: SYN_SENT (client) or SYN_RECV (server) to ESTABLISHED
//	porttrace_tcp_state_duration_seconds{state}        histogram: time spent in a state, observed on leaving it
//	porttrace_bind_failures_total{proto,port,errno}    counter
//	porttrace_events_lost_total{cause}                 counter: dropped, skipped, undecodable (tracer.Lost)
//	porttrace_index_sockets                            gauge: sockets in the published index
//	process_*, go_*                                    the process's CPU, memory and fds; the Go runtime's goroutines and heap
//
// The sockets the gauges count are those of the index: the ones whose
// owner porttrace knows (after a seeded start, nearly all).
//
// TIME_WAIT sockets per port are porttrace_tcp_sockets{state="time_wait"}:
// a port keeps its label after its listener goes, so the TIME_WAIT left
// behind by a server that stopped stays visible on its port. State label
// values are the kernel's state names in lower case, as node_exporter's
// node_tcp_connection_states has them.
//
// # Bounded cardinality
//
// No label ever holds a pid, an address or a remote port. The port label
// takes the ports that had a listener (seen listening by the loop or in an
// index) or a failed bind since the start, up to Options.MaxPorts of them;
// every other port, ephemeral ones above all, counts under port="other".
// So porttrace_tcp_sockets has at most 10 states times MaxPorts+1 series,
// and porttrace_bind_failures_total at most 3 protocols times MaxPorts+1
// times the errnos bind(2) returns.
//
// # Why not Prometheus's Go client
//
// The official client's packages and their dependencies (protobuf,
// procfs) take 2.8 ms to initialise, in every porttrace process: two
// thirds of what a `porttrace who` answered by the daemon may take. The
// text format it would write is small, stable and checked here by
// promtool and by a real Prometheus scraping the daemon.
package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
)

// DefaultMaxPorts is how many ports get their own label by default.
const DefaultMaxPorts = 256

// otherPort is the port label of every port without one of its own.
const otherPort = "other"

// Options say where the metrics come from.
type Options struct {
	// Index returns the latest index the event loop published
	// (correlate.Loop.Index); nil exports no socket gauges.
	Index func() *correlate.Index
	// Lost returns the events the source lost (tracer.Source.Lost); nil
	// exports no loss counters.
	Lost func() tracer.Lost
	// HistoryDropped returns the changes history dropped
	// (history.Store.Dropped); nil, without history, exports no counter.
	HistoryDropped func() uint64
	// MaxPorts bounds the port label's values; 0 means DefaultMaxPorts.
	MaxPorts int
}

// Metrics are porttrace's metrics and the tracer.Sink that feeds them.
// Record is called by the event loop only; scrapes come from any
// goroutine, and read what the loop counts through atomics.
type Metrics struct {
	opts  Options
	ports *portSet

	transitions   [tracer.StateCount][tracer.StateCount]atomic.Uint64
	handshake     [2]*histogram // client, server
	stateDuration [tracer.StateCount]*histogram

	// bindCache is the loop's own map to the counter of each failed
	// bind's label set; bindFailures lists them all for scrapes.
	bindCache        map[bindKey]*atomic.Uint64
	bindFailuresLock sync.Mutex
	bindFailures     []bindFailures
}

// bindKey is a failed bind's label set; port 0 stands for "other".
type bindKey struct {
	proto tracer.Proto
	port  uint16
	errno int32
}

type bindFailures struct {
	key   bindKey
	count *atomic.Uint64
}

var _ tracer.Sink = (*Metrics)(nil)

// The buckets of the histograms.
func handshakeBuckets() *histogram { return newHistogram(50e-6, 4, 10) } // 50µs to 13s: loopback to SYN retransmissions
func durationBuckets() *histogram  { return newHistogram(1e-3, 4, 12) }  // 1ms to 70 minutes: a FIN_WAIT1 on loopback to a listener's life

// New returns the metrics.
func New(opts Options) *Metrics {
	if opts.MaxPorts == 0 {
		opts.MaxPorts = DefaultMaxPorts
	}
	m := &Metrics{
		opts:      opts,
		ports:     &portSet{max: int32(opts.MaxPorts)},
		handshake: [2]*histogram{handshakeBuckets(), handshakeBuckets()},
		bindCache: make(map[bindKey]*atomic.Uint64),
	}
	for s := range m.stateDuration {
		m.stateDuration[s] = durationBuckets()
	}
	return m
}

// Handler serves the metrics in Prometheus's text exposition format.
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(m.scrape())
	})
}

// scrape writes every metric, each family once.
func (m *Metrics) scrape() []byte {
	var e exposition
	m.writeTransitions(&e)
	m.writeBindFailures(&e)
	e.family("porttrace_tcp_handshake_duration_seconds", "histogram",
		"TCP handshakes, from SYN_SENT (side client) or SYN_RECV (side server) to ESTABLISHED.")
	e.histogram("porttrace_tcp_handshake_duration_seconds", m.handshake[0], "side", "client")
	e.histogram("porttrace_tcp_handshake_duration_seconds", m.handshake[1], "side", "server")
	m.writeStateDurations(&e)
	m.writeSnapshot(&e)
	writeProcess(&e)
	writeRuntime(&e)
	return e.b
}

func (m *Metrics) writeTransitions(e *exposition) {
	type transition struct {
		from, to string
		count    uint64
	}
	var seen []transition
	for old := range m.transitions {
		for new := range m.transitions[old] {
			if n := m.transitions[old][new].Load(); n > 0 {
				seen = append(seen, transition{stateLabel(tracer.State(old)), stateLabel(tracer.State(new)), n})
			}
		}
	}
	if len(seen) == 0 {
		return
	}
	slices.SortFunc(seen, func(a, b transition) int {
		return strings.Compare(a.from+" "+a.to, b.from+" "+b.to)
	})
	e.family("porttrace_tcp_state_transitions_total", "counter", "TCP state transitions, by the states left and entered.")
	for _, t := range seen {
		e.sample("porttrace_tcp_state_transitions_total", float64(t.count), "from", t.from, "to", t.to)
	}
}

func (m *Metrics) writeBindFailures(e *exposition) {
	type failure struct {
		errno, port, proto string
		count              uint64
	}
	m.bindFailuresLock.Lock()
	seen := make([]failure, 0, len(m.bindFailures))
	for _, f := range m.bindFailures {
		seen = append(seen, failure{tracer.ErrnoName(f.key.errno), portLabel(f.key.port), f.key.proto.String(), f.count.Load()})
	}
	m.bindFailuresLock.Unlock()
	if len(seen) == 0 {
		return
	}
	slices.SortFunc(seen, func(a, b failure) int {
		return strings.Compare(a.errno+" "+a.port+" "+a.proto, b.errno+" "+b.port+" "+b.proto)
	})
	e.family("porttrace_bind_failures_total", "counter",
		`Failed bind(2) calls, by protocol, port ("other" past the labelled ports) and errno.`)
	for _, f := range seen {
		e.sample("porttrace_bind_failures_total", float64(f.count), "errno", f.errno, "port", f.port, "proto", f.proto)
	}
}

func (m *Metrics) writeStateDurations(e *exposition) {
	type observed struct {
		state string
		h     *histogram
	}
	var seen []observed
	for s, h := range m.stateDuration {
		if h.count() > 0 {
			seen = append(seen, observed{stateLabel(tracer.State(s)), h})
		}
	}
	if len(seen) == 0 {
		return
	}
	slices.SortFunc(seen, func(a, b observed) int { return strings.Compare(a.state, b.state) })
	e.family("porttrace_tcp_state_duration_seconds", "histogram", "Time TCP sockets spent in a state, observed when they leave it.")
	for _, o := range seen {
		e.histogram("porttrace_tcp_state_duration_seconds", o.h, "state", o.state)
	}
}

func stateLabel(s tracer.State) string { return strings.ToLower(s.String()) }

// Record implements tracer.Sink.
func (m *Metrics) Record(r *tracer.Record) {
	switch r.Type {
	case tracer.RecordState, tracer.RecordListen:
		if r.New == tracer.StateListen {
			m.ports.add(r.SPort)
		}
		m.transition(r)
	case tracer.RecordSocket:
		if r.New == tracer.StateListen {
			m.ports.add(r.SPort)
		}
	case tracer.RecordBind:
		if r.Err != 0 {
			m.bindFailure(r)
		}
	}
}

// Tick implements tracer.Sink: metrics are live, there is nothing to
// flush.
func (m *Metrics) Tick(int64) int64 { return tracer.NoDeadline }

func (m *Metrics) transition(r *tracer.Record) {
	old, new := r.Old, r.New
	if old >= tracer.StateCount {
		old = tracer.StateUnknown
	}
	if new >= tracer.StateCount {
		new = tracer.StateUnknown
	}
	m.transitions[old][new].Add(1)
	if r.DurationNs < 0 {
		return
	}
	seconds := float64(r.DurationNs) / 1e9
	m.stateDuration[old].observe(seconds)
	if new == tracer.StateEstablished {
		switch old {
		case tracer.StateSynSent:
			m.handshake[0].observe(seconds)
		case tracer.StateSynRecv:
			m.handshake[1].observe(seconds)
		}
	}
}

func (m *Metrics) bindFailure(r *tracer.Record) {
	key := bindKey{proto: r.Proto, errno: r.Err}
	if m.ports.add(r.SPort) {
		key.port = r.SPort
	}
	c := m.bindCache[key]
	if c == nil {
		c = new(atomic.Uint64)
		m.bindCache[key] = c
		m.bindFailuresLock.Lock()
		m.bindFailures = append(m.bindFailures, bindFailures{key, c})
		m.bindFailuresLock.Unlock()
	}
	c.Add(1)
}

// portLabel is the label of a labelled port, port 0 standing for the
// others.
func portLabel(port uint16) string {
	if port == 0 {
		return otherPort
	}
	return strconv.Itoa(int(port))
}

// portSet is the ports with a label of their own: it only grows, up to
// max, and both the event loop and scrapes add to it.
type portSet struct {
	member [1 << 16]atomic.Bool
	n      atomic.Int32
	max    int32
}

// add gives port a label if it has none and there is room, and reports
// whether it has one. Port 0 never has.
func (p *portSet) add(port uint16) bool {
	if port == 0 {
		return false
	}
	if p.member[port].Load() {
		return true
	}
	for {
		n := p.n.Load()
		if n >= p.max {
			return false
		}
		if p.n.CompareAndSwap(n, n+1) {
			break
		}
	}
	if p.member[port].Swap(true) {
		p.n.Add(-1) // another goroutine added it meanwhile
	}
	return true
}

func (p *portSet) has(port uint16) bool { return p.member[port].Load() }
