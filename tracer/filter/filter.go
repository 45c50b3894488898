// Package filter chooses the lines a watch shows: by TCP state, kind of
// line, failure, process name, process tree and container. It runs on the
// event loop's goroutine, before anything is formatted. The tests of state,
// kind, failure and name are a few comparisons; those of a process tree
// and a container ask the system once for each process and each cgroup
// they meet, and keep the answer.
package filter

import (
	"fmt"
	"strings"

	"github.com/porttrace/porttrace/tracer"
)

// Options are the tests a line must pass, all of them; the zero Options
// pass everything.
type Options struct {
	// States keeps transitions into or out of these states (and a
	// socket's line at the start of the watch, or on changing hands, in
	// one of them); binds have no state and are left out.
	States []tracer.State
	// Types keeps these kinds of line.
	Types []tracer.RecordType
	// Failed keeps failures: binds that failed, connects that did not
	// connect (SYN_SENT -> CLOSE), and sockets the kernel closed for an
	// error (a reset).
	Failed bool
	// Comms keeps the lines of sockets whose owner has one of these
	// command names (cut to 15 bytes, as the kernel keeps them).
	Comms []string
	// Tree keeps the lines of sockets owned by a process and its
	// descendants.
	Tree *Tree
	// Container keeps the lines of sockets owned by the processes of one
	// container.
	Container *Container
}

// Filter passes the lines that pass every test on and counts the others.
// It takes both kinds of line: a socket's transitions (Record) and, in a
// watch with --connections, connections (Connection).
type Filter struct {
	next      tracer.Output
	states    uint16 // bit s set: state s wanted; 0: any
	types     uint8  // bit t set: RecordType t wanted; 0: any
	failed    bool
	comms     []tracer.Comm
	tree      *Tree
	container *Container
	hidden    uint64
}

var _ tracer.Output = (*Filter)(nil)

// New returns a Filter in front of next.
func New(next tracer.Output, o Options) *Filter {
	f := &Filter{next: next, failed: o.Failed, tree: o.Tree, container: o.Container}
	for _, s := range o.States {
		f.states |= 1 << s
	}
	for _, t := range o.Types {
		f.types |= 1 << t
	}
	for _, c := range o.Comms {
		f.comms = append(f.comms, tracer.CommFrom(c))
	}
	return f
}

// Record implements tracer.Sink.
func (f *Filter) Record(r *tracer.Record) {
	if !f.Match(r) {
		f.hidden++
		return
	}
	f.next.Record(r)
}

// Connection implements tracer.Output.
func (f *Filter) Connection(c *tracer.Connection) {
	if !f.MatchConnection(c) {
		f.hidden++
		return
	}
	f.next.Connection(c)
}

// Tick implements tracer.Sink.
func (f *Filter) Tick(nowNs int64) int64 { return f.next.Tick(nowNs) }

// Hidden counts the lines the filter kept from the next sink.
func (f *Filter) Hidden() uint64 { return f.hidden }

// Match reports whether r passes every test.
func (f *Filter) Match(r *tracer.Record) bool {
	if f.types != 0 && f.types&(1<<r.Type) == 0 {
		return false
	}
	if f.states != 0 && (r.Type == tracer.RecordBind || f.states&(1<<r.Old|1<<r.New)&^1 == 0) {
		return false
	}
	if f.failed && !Failed(r) {
		return false
	}
	if r.Type == tracer.RecordOwner {
		// A socket changing hands concerns both owners.
		return f.owns(&r.Process, r.TimeNs) || f.owns(&r.Prev, r.TimeNs)
	}
	return f.owns(&r.Process, r.TimeNs)
}

// MatchConnection reports whether c passes every test: it passed through
// one of the states (either end), it failed (an error closed it, or its
// connect never connected), and one of its traced ends' owners passes the
// tests of owners. Kinds of line do not apply.
func (f *Filter) MatchConnection(c *tracer.Connection) bool {
	if f.states != 0 && !f.passedThrough(&c.Client) && !f.passedThrough(&c.Server) {
		return false
	}
	if f.failed && !ConnectionFailed(c) {
		return false
	}
	return c.Client.Traced && f.owns(&c.Client.Process, c.EndNs) || c.Server.Traced && f.owns(&c.Server.Process, c.EndNs)
}

func (f *Filter) passedThrough(end *tracer.ConnEnd) bool {
	for _, st := range end.States[:end.NStates] {
		if f.states&(1<<st.State) != 0 {
			return true
		}
	}
	return false
}

// ConnectionFailed reports whether c failed: an error closed one of its
// ends (refused, timed out, reset), or its client's connect ended before
// it connected.
func ConnectionFailed(c *tracer.Connection) bool {
	client := &c.Client
	return c.Err != 0 || !c.Open && client.Traced && client.NStates == 1 && client.States[0].State == tracer.StateSynSent
}

// Learner returns a Sink that has the filter's tests of process trees and
// containers meet the owners of each record it passes on to next, or nil
// when the filter has no such test. Put in front of a reorder window and
// connection lines, which the filter judges up to a minute after the
// fact, it has those tests ask the system about each process and cgroup
// while they still exist, and remember the answers.
func (f *Filter) Learner(next tracer.Sink) tracer.Sink {
	if f.tree == nil && f.container == nil {
		return nil
	}
	return &learner{f: f, next: next}
}

type learner struct {
	f    *Filter
	next tracer.Sink
}

func (l *learner) Record(r *tracer.Record) {
	l.f.learn(&r.Process, r.TimeNs)
	if r.Type == tracer.RecordOwner {
		l.f.learn(&r.Prev, r.TimeNs)
	}
	l.next.Record(r)
}

func (l *learner) Tick(nowNs int64) int64 { return l.next.Tick(nowNs) }

// learn has the tests of trees and containers meet p.
func (f *Filter) learn(p *tracer.Process, nowNs int64) {
	if f.tree != nil {
		f.tree.Contains(p)
	}
	if f.container != nil {
		f.container.Contains(p.CgroupID, nowNs)
	}
}

// owns reports whether p passes the tests of owners.
func (f *Filter) owns(p *tracer.Process, nowNs int64) bool {
	if len(f.comms) > 0 && !f.hasComm(&p.Comm) {
		return false
	}
	if f.tree != nil && !f.tree.Contains(p) {
		return false
	}
	if f.container != nil && !f.container.Contains(p.CgroupID, nowNs) {
		return false
	}
	return true
}

func (f *Filter) hasComm(c *tracer.Comm) bool {
	for i := range f.comms {
		if f.comms[i] == *c {
			return true
		}
	}
	return false
}

// Failed reports whether r is a failure: a bind that failed, a connect
// that never connected, or a socket the kernel closed for an error.
func Failed(r *tracer.Record) bool {
	switch r.Type {
	case tracer.RecordBind:
		return r.Err != 0
	case tracer.RecordState:
		return r.Err != 0 || (r.Old == tracer.StateSynSent && r.New == tracer.StateClose)
	}
	return false
}

// ParseStates reads a comma-separated list of TCP states, in porttrace's
// names (TIME_WAIT) or ss's (time-wait), in any case.
func ParseStates(spec string) ([]tracer.State, error) {
	var states []tracer.State
	for _, item := range strings.Split(spec, ",") {
		name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(item), "-", "_"))
		s, ok := tracer.ParseState(name)
		if !ok || s == tracer.StateUnknown {
			return nil, fmt.Errorf("invalid state %q: want one of %s", item, strings.Join(StateNames(), ", "))
		}
		states = append(states, s)
	}
	return states, nil
}

// StateNames are the TCP states, as ParseStates reads them.
func StateNames() []string {
	var names []string
	for s := tracer.State(1); s < tracer.StateCount; s++ {
		names = append(names, s.String())
	}
	return names
}

// TypeNames are the kinds of line, as ParseTypes reads them.
var TypeNames = []string{
	tracer.RecordState.String(), tracer.RecordListen.String(), tracer.RecordBind.String(),
	tracer.RecordSocket.String(), tracer.RecordOwner.String(),
}

// ParseTypes reads a comma-separated list of kinds of line: state,
// listen, bind, socket, owner (JSON's type field).
func ParseTypes(spec string) ([]tracer.RecordType, error) {
	var types []tracer.RecordType
	for _, item := range strings.Split(spec, ",") {
		name := strings.ToLower(strings.TrimSpace(item))
		found := false
		for t := tracer.RecordState; t <= tracer.RecordOwner; t++ {
			if t.String() == name {
				types, found = append(types, t), true
			}
		}
		if !found {
			return nil, fmt.Errorf("invalid event %q: want one of %s", item, strings.Join(TypeNames, ", "))
		}
	}
	return types, nil
}
