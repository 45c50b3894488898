package metrics

import "github.com/porttrace/porttrace/tracer"

// gaugeStates are the states porttrace_tcp_sockets reports for each port:
// those a live socket can be in (CLOSE ones are gone, NEW_SYN_RECV ones
// are not full sockets).
var gaugeStates = []tracer.State{
	tracer.StateEstablished, tracer.StateSynSent, tracer.StateSynRecv, tracer.StateFinWait1, tracer.StateFinWait2,
	tracer.StateTimeWait, tracer.StateCloseWait, tracer.StateLastAck, tracer.StateListen, tracer.StateClosing,
}

// writeSnapshot writes what is read at each scrape: the sockets of what
// the event loop published last, and what the source and history count.
func (m *Metrics) writeSnapshot(e *exposition) {
	if m.opts.Index != nil {
		m.writeSockets(e)
	}
	if m.opts.Lost != nil {
		lost := m.opts.Lost()
		e.family("porttrace_events_lost_total", "counter",
			"Kernel events porttrace lost, by cause: dropped (its buffer was full), skipped (a probe did not run, a softirq interrupting it), undecodable.")
		e.sample("porttrace_events_lost_total", float64(lost.Dropped), "cause", "dropped")
		e.sample("porttrace_events_lost_total", float64(lost.Skipped), "cause", "skipped")
		e.sample("porttrace_events_lost_total", float64(lost.Undecodable), "cause", "undecodable")
	}
	if m.opts.HistoryDropped != nil {
		e.family("porttrace_history_dropped_total", "counter",
			"Changes (binds, listens, ends, owner changes, connection counts) that never reached the history database: its writer fell behind (a slow disk) or stopped (a full disk).")
		e.sample("porttrace_history_dropped_total", float64(m.opts.HistoryDropped()))
	}
}

func (m *Metrics) writeSockets(e *exposition) {
	idx := m.opts.Index()
	sockets := idx.Sockets()
	// Listeners first: their ports get labels before their connections
	// are counted.
	for i := range sockets {
		if s := &sockets[i]; s.Proto != tracer.ProtoUDP && s.State == tracer.StateListen {
			m.ports.add(s.Local.Port())
		}
	}
	counts := map[uint16]*[tracer.StateCount]int{}
	// The timewait sockets of connections older than porttrace count by
	// state too, though no owner is known.
	for s := range idx.EverySocket() {
		if s.Proto == tracer.ProtoUDP || s.State >= tracer.StateCount {
			continue
		}
		port := s.Local.Port()
		if !m.ports.has(port) {
			port = 0
		}
		byState := counts[port]
		if byState == nil {
			byState = new([tracer.StateCount]int)
			counts[port] = byState
		}
		byState[s.State]++
	}
	e.family("porttrace_tcp_sockets", "gauge",
		`TCP sockets by state, per listening port (local port; "other" for every port without a label, ephemeral ones above all).`)
	var none [tracer.StateCount]int
	write := func(port uint16) {
		byState := counts[port]
		if byState == nil {
			byState = &none
		}
		label := portLabel(port)
		for _, st := range gaugeStates {
			e.sample("porttrace_tcp_sockets", float64(byState[st]), "port", label, "state", stateLabel(st))
		}
	}
	for port := range 1 << 16 {
		if m.ports.has(uint16(port)) {
			write(uint16(port))
		}
	}
	write(0)
	e.family("porttrace_index_sockets", "gauge", "Sockets in the index porttrace publishes: those whose owner it knows.")
	e.sample("porttrace_index_sockets", float64(idx.Len()))
}
