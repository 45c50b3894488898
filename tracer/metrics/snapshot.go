package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/porttrace/porttrace/tracer"
)

var (
	socketsDesc = prometheus.NewDesc("porttrace_tcp_sockets",
		`TCP sockets by state, per listening port (local port; "other" for every port without a label, ephemeral ones above all).`,
		[]string{"port", "state"}, nil)
	indexSocketsDesc = prometheus.NewDesc("porttrace_index_sockets",
		"Sockets in the index porttrace publishes: those whose owner it knows.", nil, nil)
	lostDesc = prometheus.NewDesc("porttrace_events_lost_total",
		"Kernel events porttrace lost, by cause: dropped (its buffer was full), skipped (a probe did not run, a softirq interrupting it), undecodable.",
		[]string{"cause"}, nil)
	historyDroppedDesc = prometheus.NewDesc("porttrace_history_dropped_total",
		"Changes (binds, listens, ends, owner changes, connection counts) that never reached the history database: its writer fell behind (a slow disk) or stopped (a full disk).",
		nil, nil)
)

// gaugeStates are the states porttrace_tcp_sockets reports for each port:
// those a live socket can be in (CLOSE ones are gone, NEW_SYN_RECV ones
// are not full sockets).
var gaugeStates = []tracer.State{
	tracer.StateEstablished, tracer.StateSynSent, tracer.StateSynRecv, tracer.StateFinWait1, tracer.StateFinWait2,
	tracer.StateTimeWait, tracer.StateCloseWait, tracer.StateLastAck, tracer.StateListen, tracer.StateClosing,
}

// snapshotCollector reads, at each scrape, what the event loop published
// and what the source counts.
type snapshotCollector struct {
	opts  Options
	ports *portSet
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- socketsDesc
	ch <- indexSocketsDesc
	ch <- lostDesc
	ch <- historyDroppedDesc
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	if c.opts.Index != nil {
		c.collectSockets(ch)
	}
	if c.opts.Lost != nil {
		lost := c.opts.Lost()
		ch <- prometheus.MustNewConstMetric(lostDesc, prometheus.CounterValue, float64(lost.Dropped), "dropped")
		ch <- prometheus.MustNewConstMetric(lostDesc, prometheus.CounterValue, float64(lost.Skipped), "skipped")
		ch <- prometheus.MustNewConstMetric(lostDesc, prometheus.CounterValue, float64(lost.Undecodable), "undecodable")
	}
	if c.opts.HistoryDropped != nil {
		ch <- prometheus.MustNewConstMetric(historyDroppedDesc, prometheus.CounterValue, float64(c.opts.HistoryDropped()))
	}
}

func (c *snapshotCollector) collectSockets(ch chan<- prometheus.Metric) {
	idx := c.opts.Index()
	sockets := idx.Sockets()
	// Listeners first: their ports get labels before their connections
	// are counted.
	for i := range sockets {
		if s := &sockets[i]; s.Proto != tracer.ProtoUDP && s.State == tracer.StateListen {
			c.ports.add(s.Local.Port())
		}
	}
	counts := map[uint16]*[tracer.StateCount]int{}
	for i := range sockets {
		s := &sockets[i]
		if s.Proto == tracer.ProtoUDP || s.State >= tracer.StateCount {
			continue
		}
		port := s.Local.Port()
		if !c.ports.has(port) {
			port = 0
		}
		byState := counts[port]
		if byState == nil {
			byState = new([tracer.StateCount]int)
			counts[port] = byState
		}
		byState[s.State]++
	}
	var none [tracer.StateCount]int
	emit := func(port uint16) {
		byState := counts[port]
		if byState == nil {
			byState = &none
		}
		label := portLabel(port)
		for _, st := range gaugeStates {
			ch <- prometheus.MustNewConstMetric(socketsDesc, prometheus.GaugeValue, float64(byState[st]), label, stateLabel(st))
		}
	}
	for port := range 1 << 16 {
		if c.ports.has(uint16(port)) {
			emit(uint16(port))
		}
	}
	emit(0)
	ch <- prometheus.MustNewConstMetric(indexSocketsDesc, prometheus.GaugeValue, float64(idx.Len()))
}
