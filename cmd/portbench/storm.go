//go:build linux

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
)

// contender is one column of the storm comparison: a tracer, or none.
type contender struct {
	tracer
	none      bool // the untraced baseline
	otherPort bool // watches a port nobody uses while the storm runs
}

// tally adds up a contender's runs.
type tally struct {
	contender
	rates, ratios   []float64 // per round; ratio to the same round's baseline
	conns           int
	counted         bool // its output was counted: lines and expected mean something
	lines, expected int  // storm transitions printed, and due
	all             int  // every line printed
	lost            lostReport
	bpf             bpfStats
	cpu             cpuTimes // the tracer's
	wakeups         uint64   // the tracer's
	stormCPU        cpuTimes // portstorm's, BPF programs run in it included
	err             error
}

// porttraceTracer watches with this checkout's porttrace, which says
// when it is attached through --ready-file.
func (b *bench) porttraceTracer(name string, json bool, parse lineParser) tracer {
	return tracer{name: name, readyFile: true, parse: parse, lost: porttraceLost,
		argv: func(port int, ready string) []string {
			argv := []string{b.porttrace, "--port", strconv.Itoa(port), "--ready-file", ready}
			if json {
				argv = append(argv, "--json")
			}
			return argv
		}}
}

// porttraceText is porttrace as it is most often run, and the rate the
// long storm of the memory section is sized by.
const porttraceText = "porttrace (text to /dev/null)"

func (b *bench) contenders() []contender {
	cs := []contender{
		{none: true, tracer: tracer{name: "no tracer"}},
		{tracer: b.porttraceTracer(porttraceText, false, nil)},
		{tracer: b.porttraceTracer("porttrace --json (to a file)", true, parsePorttraceJSON)},
		{tracer: b.porttraceTracer("porttrace, another port (JSON)", true, parsePorttraceJSON), otherPort: true},
		{tracer: b.daemonTracer(porttraceDaemon, filepath.Join(b.dir, "daemon-data"))},
	}
	if b.tcpstates != "" {
		// Unfiltered: its -L and -D filters are ANDed, so none of them
		// catches both ends of a port; lines are counted for the port.
		cs = append(cs, contender{tracer: tracer{name: "tcpstates (to a file)", parse: parseTcpstates, lost: tcpstatesLost, peer: true,
			argv: func(int, string) []string { return []string{b.tcpstates} }}})
	}
	if b.bpftrace != "" {
		cs = append(cs, contender{tracer: tracer{name: "bpftrace (to a file)", parse: parseBpftrace, lost: bpftraceLost, outputLost: bpftraceLostLine, peer: true,
			argv: func(port int, _ string) []string {
				return []string{b.bpftrace, "-B", "full", "-e", bpftraceScript(port)}
			}}})
	}
	return cs
}

// stormPorts are where the storm runs and the port nobody uses.
type stormPorts struct{ storm, other int }

// stormSection runs every contender once per round, in an order rotated
// each round, so that the machine's noise falls on all of them alike; then
// one more round with the kernel's BPF statistics on, which cost two clock
// reads per program run and so are kept out of the measured rounds.
func (b *bench) stormSection(ctx context.Context) ([]*tally, error) {
	var ports stormPorts
	var err error
	if ports.storm, err = b.freePort(); err != nil {
		return nil, err
	}
	if ports.other, err = b.freePort(); err != nil {
		return nil, err
	}
	cs := b.contenders()
	tallies := newTallies(cs)
	for round := range b.opts.rounds {
		label := fmt.Sprintf("round %d/%d", round+1, b.opts.rounds)
		if err := b.round(ctx, label, rotate(tallies, round), b.roundPorts(&ports)); err != nil {
			return nil, err
		}
	}
	b.printStorm(ports, tallies)
	b.checkStorm(tallies)
	b.printTargets(tallies)
	profile := newTallies(cs)
	stats, err := enableStats()
	if err != nil {
		return nil, err
	}
	err = b.round(ctx, "profile round", profile, b.roundPorts(&ports))
	stats.Close()
	if err != nil {
		return nil, err
	}
	b.printProfile(profile)
	return tallies, nil
}

// checkStorm flags what no amount of machine noise explains: a port
// filter letting lines through, or porttrace printing nothing of a storm.
func (b *bench) checkStorm(tallies []*tally) {
	for _, t := range tallies {
		switch {
		case t.peer || !t.counted:
		case t.otherPort && t.all > 0:
			b.problem("%s: printed %d lines for a port with no traffic: the in-kernel port filter is broken", t.name, t.all)
		case !t.otherPort && t.lines == 0:
			b.problem("%s: printed none of the storm's %d transitions", t.name, t.expected)
		}
	}
}

// roundPorts: one storm port for every run while tcp_tw_reuse is on
// (loopback: 2): the client reuses its own TIME_WAIT ports, so TIME_WAIT
// sockets stay bounded and every run meets the same kernel state. Without
// it, a fresh port per round keeps the 4-tuples apart.
func (b *bench) roundPorts(p *stormPorts) stormPorts {
	if sysctl("net/ipv4/tcp_tw_reuse") == "0" {
		if port, err := b.freePort(); err == nil {
			p.storm = port
		}
	}
	return *p
}

func newTallies(cs []contender) []*tally {
	tallies := make([]*tally, len(cs))
	for i, c := range cs {
		tallies[i] = &tally{contender: c}
	}
	return tallies
}

func rotate[T any](s []T, n int) []T {
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

// round runs each contender once; a contender that failed before is not
// run again.
func (b *bench) round(ctx context.Context, label string, order []*tally, ports stormPorts) error {
	rates := map[*tally]float64{}
	var baseline float64
	for _, t := range order {
		if t.err != nil {
			continue
		}
		b.progress("%s: %s", label, t.name)
		res, err := b.runContender(ctx, t.contender, ports)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			t.err = err
			b.failed(t, err)
			continue
		}
		t.add(res, b.opts.conns)
		rates[t] = res.storm.rate
		if t.none {
			baseline = res.storm.rate
		}
	}
	if baseline == 0 {
		return fmt.Errorf("%s: the untraced storm failed", label)
	}
	for t, rate := range rates {
		t.ratios = append(t.ratios, rate/baseline)
	}
	return nil
}

// failed records a contender's failure: a problem for porttrace and the
// baseline, a note in the table for a peer.
func (b *bench) failed(t *tally, err error) {
	if t.peer {
		b.progress("%s failed: %v", t.name, err)
		return
	}
	b.problem("%s: %v", t.name, err)
}

// runResult is one storm under one contender.
type runResult struct {
	storm  stormResult
	tracer tracerResult
}

// runContender measures one storm under c.
func (b *bench) runContender(ctx context.Context, c contender, ports stormPorts) (runResult, error) {
	if c.none {
		storm, err := b.storm(ctx, ports.storm, b.opts.conns)
		return runResult{storm: storm, tracer: tracerResult{lines: -1}}, err
	}
	watch := ports.storm
	if c.otherPort {
		watch = ports.other
	}
	run, err := b.startTracer(ctx, c.tracer, watch)
	if err != nil {
		return runResult{}, err
	}
	defer run.c.stop()
	storm, err := b.storm(ctx, ports.storm, b.opts.conns)
	if err != nil {
		return runResult{}, err
	}
	if err := waitQuiet(ctx, ports.storm); err != nil {
		return runResult{}, err
	}
	res, err := run.finish(ports.storm)
	return runResult{storm: storm, tracer: res}, err
}

func (t *tally) add(r runResult, conns int) {
	t.rates = append(t.rates, r.storm.rate)
	t.conns += conns
	t.stormCPU = t.stormCPU.add(r.storm.cpu)
	if r.tracer.lines >= 0 {
		t.counted = true
		t.lines += r.tracer.lines
		if !t.otherPort {
			t.expected += conns * transitionsPerConn
		}
	}
	t.all += r.tracer.all
	t.lost.lost += r.tracer.lost.lost
	t.lost.skipped += r.tracer.lost.skipped
	t.lost.gaps += r.tracer.lost.gaps
	t.bpf.add(r.tracer.bpf)
	t.cpu = t.cpu.add(r.tracer.cpu)
	t.wakeups += r.tracer.wakeups
}
