package filter

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
)

// The processes of these tests: 10 is the root of a tree, 11 its child,
// 12 its grandchild; 20 a stranger whose parent is 1. Each started at pid
// seconds; the events carry exact start times, /proc rounded ones.
var parents = map[uint32]uint32{10: 1, 11: 10, 12: 11, 20: 1, 1: 0}

func ident(pid uint32) proc.Identity {
	return proc.Identity{PID: pid, StartNs: uint64(pid) * 1e9}
}

func owner(pid uint32, comm string, cgroup uint64) tracer.Process {
	return tracer.Process{PID: pid, StartNs: uint64(pid)*1e9 + 1234, Comm: tracer.CommFrom(comm), CgroupID: cgroup}
}

// samples are one line of each shape, each named.
func samples() map[string]tracer.Record {
	base := tracer.Record{TimeNs: 1e9, Type: tracer.RecordState, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4,
		SAddr: netip.MustParseAddr("127.0.0.1"), SPort: 8080, DAddr: netip.MustParseAddr("127.0.0.1"), DPort: 40000,
		Process: owner(11, "nginx", 500), DurationNs: -1}
	with := func(edit func(r *tracer.Record)) tracer.Record { r := base; edit(&r); return r }
	return map[string]tracer.Record{
		"bind":        with(func(r *tracer.Record) { r.Type = tracer.RecordBind }),
		"bind failed": with(func(r *tracer.Record) { r.Type, r.Err = tracer.RecordBind, 98 }),
		"listen": with(func(r *tracer.Record) {
			r.Type, r.Old, r.New = tracer.RecordListen, tracer.StateClose, tracer.StateListen
		}),
		"established": with(func(r *tracer.Record) { r.Old, r.New = tracer.StateSynRecv, tracer.StateEstablished }),
		"close wait":  with(func(r *tracer.Record) { r.Old, r.New = tracer.StateEstablished, tracer.StateCloseWait }),
		"last ack":    with(func(r *tracer.Record) { r.Old, r.New = tracer.StateCloseWait, tracer.StateLastAck }),
		"time wait": with(func(r *tracer.Record) {
			r.Old, r.New, r.Process = tracer.StateFinWait2, tracer.StateTimeWait, owner(20, "curl", 600)
		}),
		"refused": with(func(r *tracer.Record) {
			r.Old, r.New, r.Err, r.Process = tracer.StateSynSent, tracer.StateClose, 111, owner(20, "curl", 600)
		}),
		"abandoned": with(func(r *tracer.Record) {
			r.Old, r.New, r.Process = tracer.StateSynSent, tracer.StateClose, owner(12, "curl", 600)
		}),
		"reset":    with(func(r *tracer.Record) { r.Old, r.New, r.Err = tracer.StateEstablished, tracer.StateClose, 104 }),
		"at start": with(func(r *tracer.Record) { r.Type, r.New = tracer.RecordSocket, tracer.StateCloseWait }),
		"owner to tree": with(func(r *tracer.Record) {
			r.Type, r.New, r.Prev = tracer.RecordOwner, tracer.StateListen, owner(20, "sh", 600)
		}),
		"no owner": with(func(r *tracer.Record) {
			r.Old, r.New, r.Process = tracer.StateLastAck, tracer.StateClose, tracer.Process{CgroupID: 500}
		}),
		"owner 10": with(func(r *tracer.Record) {
			r.Old, r.New, r.Process = tracer.StateClose, tracer.StateSynSent, owner(10, "nginx", 700)
		}),
		"reused pid 11": with(func(r *tracer.Record) {
			r.Old, r.New, r.Process = tracer.StateClose, tracer.StateSynSent, owner(11, "nginx", 500)
			r.StartNs += 5e9
		}),
		"kept in window": with(func(r *tracer.Record) { r.Old, r.New, r.Late = tracer.StateSynRecv, tracer.StateEstablished, true }),
	}
}

// kept lists, sorted, the samples f passes.
func kept(f *Filter) []string {
	var names []string
	for name, r := range samples() {
		if f.Match(&r) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func fakeIdentify(pid uint32) (proc.Identity, error) {
	if _, ok := parents[pid]; !ok || exited[pid] {
		return proc.Identity{}, proc.ErrExited
	}
	return ident(pid), nil
}

// exited are processes of parents that have exited since they acted.
var exited = map[uint32]bool{}

func fakeParent(asked *[]uint32) func(proc.Identity) (proc.Identity, error) {
	return func(id proc.Identity) (proc.Identity, error) {
		*asked = append(*asked, id.PID)
		ppid, ok := parents[id.PID]
		if !ok || ppid == 0 || exited[id.PID] || !id.Same(ident(id.PID)) {
			return proc.Identity{}, proc.ErrExited
		}
		return ident(ppid), nil
	}
}

func TestFilterKeeps(t *testing.T) {
	var asked []uint32
	cgroups := map[uint64]string{
		500: "/docker/" + strings.Repeat("ab", 32),
		600: "/user.slice/session-1.scope",
		700: "/docker/" + strings.Repeat("cd", 32) + "/nested",
	}
	lookup := func(id uint64) (proc.Cgroup, bool) {
		path, ok := cgroups[id]
		return proc.ParseCgroupPath(path), ok
	}
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{{
		name: "everything without options",
		want: []string{"abandoned", "at start", "bind", "bind failed", "close wait", "established", "kept in window", "last ack", "listen", "no owner", "owner 10", "owner to tree", "refused", "reset", "reused pid 11", "time wait"},
	}, {
		name: "--state CLOSE_WAIT: into or out of it, and sockets found in it",
		opts: Options{States: []tracer.State{tracer.StateCloseWait}},
		want: []string{"at start", "close wait", "last ack"},
	}, {
		name: "--state TIME_WAIT,LISTEN",
		opts: Options{States: []tracer.State{tracer.StateTimeWait, tracer.StateListen}},
		want: []string{"listen", "owner to tree", "time wait"},
	}, {
		name: "--event bind,listen",
		opts: Options{Types: []tracer.RecordType{tracer.RecordBind, tracer.RecordListen}},
		want: []string{"bind", "bind failed", "listen"},
	}, {
		name: "--failed",
		opts: Options{Failed: true},
		want: []string{"abandoned", "bind failed", "refused", "reset"},
	}, {
		name: "--comm curl,sh: owners by name, either owner of a handover",
		opts: Options{Comms: []string{"curl", "sh"}},
		want: []string{"abandoned", "owner to tree", "refused", "time wait"},
	}, {
		name: "--pid 10: the process, its child and grandchild, not a process that took a child's pid",
		opts: Options{Tree: NewTree(ident(10), fakeIdentify, fakeParent(&asked))},
		want: []string{"abandoned", "at start", "bind", "bind failed", "close wait", "established", "kept in window", "last ack", "listen", "owner 10", "owner to tree", "reset"},
	}, {
		name: "--container abab: its cgroups only, by an id's prefix",
		opts: Options{Container: NewContainer("ABABABABABAB", lookup)},
		want: []string{"at start", "bind", "bind failed", "close wait", "established", "kept in window", "last ack", "listen", "no owner", "owner to tree", "reset", "reused pid 11"},
	}, {
		name: "--container cdcd: a nested cgroup of the container",
		opts: Options{Container: NewContainer(strings.Repeat("cd", 32), lookup)},
		want: []string{"owner 10"},
	}, {
		name: "every test at once",
		opts: Options{States: []tracer.State{tracer.StateClose}, Failed: true, Comms: []string{"curl"}, Tree: NewTree(ident(10), fakeIdentify, fakeParent(&asked))},
		want: []string{"abandoned"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := kept(New(nil, tc.opts)); !slices.Equal(got, tc.want) {
				t.Errorf("kept %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestTreeAsksOncePerProcess: the parents are read the first time a
// process is met, never again, and not past an ancestor already placed.
func TestTreeAsksOncePerProcess(t *testing.T) {
	var asked []uint32
	tree := NewTree(ident(10), fakeIdentify, fakeParent(&asked))
	for range 3 {
		for _, pid := range []uint32{12, 11, 20, 10} {
			p := owner(pid, "x", 0)
			tree.Contains(&p)
		}
	}
	// 12 walks up through 11 to the root; 20 up to 1, whose parent is
	// none; 11 and 10 were placed on the way.
	if want := []uint32{12, 11, 20, 1}; !slices.Equal(asked, want) {
		t.Errorf("asked for the parents of %v, want %v", asked, want)
	}
	// A grandchild forked later is placed by one question, its parent's
	// place being known.
	parents[13] = 12
	defer delete(parents, 13)
	asked = nil
	p := owner(13, "x", 0)
	if !tree.Contains(&p) || !slices.Equal(asked, []uint32{13}) {
		t.Errorf("grandchild 13: asked %v", asked)
	}
}

// TestTreeTakesTheKernelsParent: a child that exited before porttrace
// looked is placed by the parent its event named; one whose named parent
// is younger than itself (a newcomer with a dead parent's pid) is not.
func TestTreeTakesTheKernelsParent(t *testing.T) {
	var asked []uint32
	tree := NewTree(ident(10), fakeIdentify, fakeParent(&asked))
	parents[14], parents[15], exited[14], exited[15] = 11, 30, true, true
	parents[30] = 1
	defer func() {
		delete(parents, 14)
		delete(parents, 15)
		delete(parents, 30)
		clear(exited)
	}()
	gone := owner(14, "x", 0)
	gone.PPID = 11
	if !tree.Contains(&gone) || slices.Contains(asked, 14) {
		t.Errorf("exited grandchild 14 with its parent named: not placed, or asked about (%v)", asked)
	}
	direct := owner(16, "x", 0)
	direct.PPID = 10
	if !tree.Contains(&direct) {
		t.Error("exited child 16 of the root: not placed")
	}
	// 15 started at 15 s; a process 30, started at 30 s, has its parent's pid now.
	orphan := owner(15, "x", 0)
	orphan.PPID = 30
	if tree.Contains(&orphan) {
		t.Error("15, whose parent's pid a younger process took, placed below the root")
	}
}

// TestContainerAsksOncePerCgroup: a cgroup is named once; one the system
// could not name yet is asked about again a second later, not before.
func TestContainerAsksOncePerCgroup(t *testing.T) {
	id := strings.Repeat("ef", 32)
	var asked []uint64
	ready := false
	c := NewContainer(id, func(cg uint64) (proc.Cgroup, bool) {
		asked = append(asked, cg)
		if cg == 3 || cg == 2 && !ready {
			return proc.Cgroup{}, false
		}
		return proc.ParseCgroupPath("/docker/" + id), true
	})
	for ms := int64(0); ms < 900; ms += 100 {
		if !c.Contains(1, ms*1e6) || c.Contains(2, ms*1e6) || c.Contains(0, ms*1e6) {
			t.Fatalf("at %d ms: cgroup 1 not in, or 2 or 0 in", ms)
		}
	}
	ready = true
	if !c.Contains(2, 1001e6) {
		t.Error("cgroup 2 not named a second later")
	}
	// Cgroup 3 is never named: asked about at 0, 1, 2 and 3 s, then no
	// more.
	for ms := int64(0); ms < 10_000; ms += 500 {
		c.Contains(3, ms*1e6)
	}
	if want := []uint64{1, 2, 2, 3, 3, 3, 3}; !slices.Equal(asked, want) {
		t.Errorf("asked about %v, want %v", asked, want)
	}
}

func TestFilterCountsWhatItHides(t *testing.T) {
	var got []string
	f := New(sinkFunc(func(r *tracer.Record) { got = append(got, r.New.String()) }), Options{Failed: true})
	for _, r := range []tracer.Record{samples()["refused"], samples()["established"], samples()["reset"]} {
		f.Record(&r)
	}
	if !slices.Equal(got, []string{"CLOSE", "CLOSE"}) || f.Hidden() != 1 {
		t.Errorf("passed %v, hid %d", got, f.Hidden())
	}
}

type sinkFunc func(*tracer.Record)

func (s sinkFunc) Record(r *tracer.Record)     { s(r) }
func (sinkFunc) Connection(*tracer.Connection) {}
func (sinkFunc) Tick(int64) int64              { return tracer.NoDeadline }

func TestFilterAllocatesNothingPerRecord(t *testing.T) {
	var asked []uint32
	f := New(nil, Options{
		States: []tracer.State{tracer.StateClose}, Comms: []string{"curl", "nginx"},
		Tree:      NewTree(ident(10), fakeIdentify, fakeParent(&asked)),
		Container: NewContainer("abab", func(uint64) (proc.Cgroup, bool) { return proc.Cgroup{}, true }),
	})
	recs := samples()
	run := func() {
		for _, r := range recs {
			f.Match(&r)
		}
	}
	run() // meets the processes and cgroups once
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations per batch", n)
	}
}

func TestParse(t *testing.T) {
	states, err := ParseStates("time-wait, CLOSE_WAIT,established")
	if err != nil || fmt.Sprint(states) != "[TIME_WAIT CLOSE_WAIT ESTABLISHED]" {
		t.Errorf("states: %v, %v", states, err)
	}
	types, err := ParseTypes("bind,Listen")
	if err != nil || fmt.Sprint(types) != "[bind listen]" {
		t.Errorf("types: %v, %v", types, err)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{second(ParseStates("TIMEWAIT")), `invalid state "TIMEWAIT": want one of ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV`},
		{second(ParseStates("UNKNOWN")), `invalid state "UNKNOWN"`},
		{second(ParseStates("LISTEN,")), `invalid state ""`},
		{second(ParseTypes("connect")), `invalid event "connect": want one of state, listen, bind, socket, owner`},
	} {
		if tc.err == nil || !strings.HasPrefix(tc.err.Error(), tc.want) {
			t.Errorf("error %v, want %q", tc.err, tc.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// conn is a connection between a client and a server end, each traced
// where its owner is given, through these states.
func conn(client, server *tracer.Process, clientStates, serverStates []tracer.State, errno int32) tracer.Connection {
	c := tracer.Connection{Proto: tracer.ProtoTCP, RolesKnown: true, EndNs: 1e9, Err: errno}
	for _, e := range []struct {
		end    *tracer.ConnEnd
		owner  *tracer.Process
		states []tracer.State
	}{{&c.Client, client, clientStates}, {&c.Server, server, serverStates}} {
		if e.owner == nil {
			continue
		}
		e.end.Traced, e.end.Process = true, *e.owner
		for _, s := range e.states {
			e.end.States[e.end.NStates] = tracer.StateTime{State: s, DurationNs: 1e6}
			e.end.NStates++
		}
	}
	return c
}

func TestFilterKeepsConnections(t *testing.T) {
	curl, nginx, stranger := owner(12, "curl", 0), owner(11, "nginx", 0), owner(20, "wget", 0)
	active := []tracer.State{tracer.StateSynSent, tracer.StateEstablished, tracer.StateFinWait1, tracer.StateFinWait2, tracer.StateTimeWait}
	passive := []tracer.State{tracer.StateSynRecv, tracer.StateEstablished, tracer.StateCloseWait, tracer.StateLastAck}
	conns := map[string]tracer.Connection{
		"local":           conn(&curl, &nginx, active, passive, 0),
		"to elsewhere":    conn(&stranger, nil, active, nil, 0),
		"refused":         conn(&stranger, nil, []tracer.State{tracer.StateSynSent}, nil, 111),
		"abandoned":       conn(&curl, nil, []tracer.State{tracer.StateSynSent}, nil, 0),
		"from elsewhere":  conn(nil, &nginx, nil, passive, 0),
		"reset by server": conn(&stranger, &nginx, active[:2], passive[:2], 104),
	}
	var asked []uint32
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"--state TIME_WAIT: passed through it", Options{States: []tracer.State{tracer.StateTimeWait}}, []string{"local", "to elsewhere"}},
		{"--state CLOSE_WAIT: either end", Options{States: []tracer.State{tracer.StateCloseWait}}, []string{"from elsewhere", "local"}},
		{"--failed", Options{Failed: true}, []string{"abandoned", "refused", "reset by server"}},
		{"--comm nginx: either end's owner", Options{Comms: []string{"nginx"}}, []string{"from elsewhere", "local", "reset by server"}},
		{"--pid 10", Options{Tree: NewTree(ident(10), fakeIdentify, fakeParent(&asked))}, []string{"abandoned", "from elsewhere", "local", "reset by server"}},
		{"--comm wget --failed", Options{Comms: []string{"wget"}, Failed: true}, []string{"refused", "reset by server"}},
	} {
		f := New(nil, tc.opts)
		var got []string
		for name, c := range conns {
			if f.MatchConnection(&c) {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: kept %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestLearnerRemembersOwnersForLater: a process the learner met while it
// ran is still placed in its tree when the filter judges its line after
// it exited.
func TestLearnerRemembersOwnersForLater(t *testing.T) {
	var asked []uint32
	f := New(sinkFunc(func(*tracer.Record) {}), Options{Tree: NewTree(ident(10), fakeIdentify, fakeParent(&asked))})
	if New(nil, Options{Failed: true}).Learner(nil) != nil {
		t.Error("a learner for a filter without tests of owners")
	}
	var passed int
	learner := f.Learner(sinkFunc(func(*tracer.Record) { passed++ }))
	r := samples()["abandoned"] // owned by 12, the root's grandchild
	learner.Record(&r)
	exited[12] = true
	defer clear(exited)
	if passed != 1 || !f.Match(&r) {
		t.Errorf("passed on %d records; the line of 12, met before it exited, matched: %v", passed, f.Match(&r))
	}
}
