// Package metrics exports what porttrace sees as Prometheus metrics,
// through the official client library.
//
// # Use
//
//	m := metrics.New(metrics.Options{Index: loop.Index, Lost: src.Lost})
//	loop := correlate.NewLoop(printer, store, m)  // m is a tracer.Sink
//	http.Handle("/metrics", m.Handler())
//
// The event loop calls Record: it only increments counters and observes
// histograms through label children it keeps once resolved (allocating the
// first time a label set appears, never after), so in steady state it
// allocates nothing, makes no system call and never blocks. The gauges are read at scrape
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
//	process_*, go_*                                    the standard process and Go runtime collectors (memory)
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
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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

// Metrics is a Prometheus registry of porttrace's metrics and the
// tracer.Sink that feeds it. Record is called by the event loop only;
// scrapes come from any goroutine.
type Metrics struct {
	reg   *prometheus.Registry
	ports *portSet

	transitions     *prometheus.CounterVec
	transitionCache [tracer.StateCount][tracer.StateCount]prometheus.Counter
	handshake       [2]prometheus.Observer // client, server
	stateDuration   *prometheus.HistogramVec
	durationCache   [tracer.StateCount]prometheus.Observer
	bindFailures    *prometheus.CounterVec
	bindCache       map[bindKey]prometheus.Counter
}

// bindKey is a failed bind's label set; port 0 stands for "other".
type bindKey struct {
	proto tracer.Proto
	port  uint16
	errno int32
}

var _ tracer.Sink = (*Metrics)(nil)

// New returns the metrics, registered with a registry of their own along
// with the process and Go runtime collectors.
func New(opts Options) *Metrics {
	if opts.MaxPorts == 0 {
		opts.MaxPorts = DefaultMaxPorts
	}
	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		ports: &portSet{max: int32(opts.MaxPorts)},
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "porttrace_tcp_state_transitions_total",
			Help: "TCP state transitions, by the states left and entered.",
		}, []string{"from", "to"}),
		bindFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "porttrace_bind_failures_total",
			Help: `Failed bind(2) calls, by protocol, port ("other" past the labelled ports) and errno.`,
		}, []string{"proto", "port", "errno"}),
		bindCache: make(map[bindKey]prometheus.Counter),
	}
	handshake := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "porttrace_tcp_handshake_duration_seconds",
		Help: "TCP handshakes, from SYN_SENT (side client) or SYN_RECV (side server) to ESTABLISHED.",
		// 50µs to 13s: loopback to SYN retransmissions.
		Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10),
	}, []string{"side"})
	m.handshake[0] = handshake.WithLabelValues("client")
	m.handshake[1] = handshake.WithLabelValues("server")
	m.stateDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "porttrace_tcp_state_duration_seconds",
		Help: "Time TCP sockets spent in a state, observed when they leave it.",
		// 1ms to 70 minutes: a FIN_WAIT1 on loopback to a listener's life.
		Buckets: prometheus.ExponentialBuckets(1e-3, 4, 12),
	}, []string{"state"})
	m.reg.MustRegister(
		m.transitions, m.bindFailures, handshake, m.stateDuration,
		&snapshotCollector{opts: opts, ports: m.ports},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
	)
	return m
}

// Registry is where the metrics are registered: the daemon may add its
// own (history's drops, for one), and tests gather from it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
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
	c := m.transitionCache[old][new]
	if c == nil {
		c = m.transitions.WithLabelValues(stateLabel(old), stateLabel(new))
		m.transitionCache[old][new] = c
	}
	c.Inc()
	if r.DurationNs < 0 {
		return
	}
	seconds := float64(r.DurationNs) / 1e9
	o := m.durationCache[old]
	if o == nil {
		o = m.stateDuration.WithLabelValues(stateLabel(old))
		m.durationCache[old] = o
	}
	o.Observe(seconds)
	if new == tracer.StateEstablished {
		switch old {
		case tracer.StateSynSent:
			m.handshake[0].Observe(seconds)
		case tracer.StateSynRecv:
			m.handshake[1].Observe(seconds)
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
		c = m.bindFailures.WithLabelValues(r.Proto.String(), portLabel(key.port), tracer.ErrnoName(r.Err))
		m.bindCache[key] = c
	}
	c.Inc()
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
