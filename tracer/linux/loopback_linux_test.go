package linux

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/render"

	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/porttrace/porttrace/bpf"
)

// needPrivileges skips a test that must load eBPF programs when run without
// the capabilities, except in CI, where skipping would hide that nothing
// was tested.
func needPrivileges(t *testing.T) {
	t.Helper()
	if err := checkPrivileges(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must run the privileged tests: %v", err)
		}
		t.Skip(err)
	}
}

// recorder collects the records of a live trace, and the events they came
// from.
type recorder struct {
	*correlate.Correlator
	mu    sync.Mutex
	recs  []tracer.Record
	evs   []tracer.Event
	stats correlate.Stats
}

func (r *recorder) Handle(ev *tracer.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, *ev)
	r.mu.Unlock()
	r.Correlator.Handle(ev)
	r.mu.Lock()
	r.stats = r.Correlator.Stats()
	r.mu.Unlock()
}

// gaps is the correlator's count of transitions it saw without their
// predecessor, read as the source's goroutine last left it.
func (r *recorder) gaps() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats.Gaps
}

func (r *recorder) events() []tracer.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.evs)
}

func newRecorder() *recorder {
	r := &recorder{}
	r.Correlator = correlate.NewCorrelator(func(rec *tracer.Record) {
		r.mu.Lock()
		r.recs = append(r.recs, *rec)
		r.mu.Unlock()
	})
	return r
}

func (r *recorder) records() []tracer.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// trace runs a source into a recorder until the test ends.
func trace(t *testing.T, cfg tracer.Config) (*recorder, *LinuxSource) {
	t.Helper()
	return traceHooks(t, cfg, defaultHooks)
}

// traceHooks is trace choosing from the given hook table.
func traceHooks(t *testing.T, cfg tracer.Config, table []hook) (*recorder, *LinuxSource) {
	t.Helper()
	return traceAllowing(t, cfg, table, inPlaceReads{sock: true, task: true, cast: true})
}

// traceAllowing is traceHooks allowing only some of the reads in place.
func traceAllowing(t *testing.T, cfg tracer.Config, table []hook, allowInPlace inPlaceReads) (*recorder, *LinuxSource) {
	t.Helper()
	src, err := open(cfg, table, allowInPlace)
	if err != nil {
		t.Fatalf("opening tracer: %v", err)
	}
	rec := newRecorder()
	runUntilCleanup(t, src, func(ctx context.Context) error { return src.Run(ctx, rec) })
	return rec, src
}

// runUntilCleanup runs a source's events through run until the test ends,
// then closes the source.
func runUntilCleanup(t *testing.T, src *LinuxSource, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if err := src.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}

// recordLister is what waitFor reads: a recorder, or a sinkRecorder.
type recordLister interface{ records() []tracer.Record }

// sinkRecorder collects the records a Loop passes to its sinks.
type sinkRecorder struct {
	mu   sync.Mutex
	recs []tracer.Record
}

func (r *sinkRecorder) Record(rec *tracer.Record) {
	r.mu.Lock()
	r.recs = append(r.recs, *rec)
	r.mu.Unlock()
}

func (*sinkRecorder) Tick(int64) int64 { return tracer.NoDeadline }

func (r *sinkRecorder) records() []tracer.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// traceLoop runs a source through a Loop, as a watch does, with the
// lookups of who holds the sockets of owners that exit, which only a loop
// makes.
func traceLoop(t *testing.T, cfg tracer.Config) *sinkRecorder {
	t.Helper()
	src, err := Open(cfg)
	if err != nil {
		t.Fatalf("opening tracer: %v", err)
	}
	rec := &sinkRecorder{}
	loop := correlate.NewLoop(rec)
	runUntilCleanup(t, src, func(ctx context.Context) error { return loop.Run(ctx, src) })
	return rec
}

// waitFor polls the records until done says they are complete.
func waitFor(t *testing.T, rec recordLister, what string, done func([]tracer.Record) bool) []tracer.Record {
	t.Helper()
	recs, ok := pollRecords(rec, done)
	if !ok {
		t.Fatalf("timed out waiting for %s; records:\n%s", what, dump(recs))
	}
	return recs
}

// pollRecords polls the records until done says they are complete, for
// 10 seconds at most; ok says whether they were.
func pollRecords(rec recordLister, done func([]tracer.Record) bool) (_ []tracer.Record, ok bool) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := rec.records()
		if done(recs) {
			return recs, true
		}
		if time.Now().After(deadline) {
			return recs, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dump(recs []tracer.Record) string {
	var b []byte
	for i := range recs {
		b = render.AppendJSON(b, &recs[i], nil)
	}
	return string(b)
}

// freePort is a port of host free to bind.
func freePort(t *testing.T, host string) uint16 {
	t.Helper()
	return freePorts(t, host, 1)[0]
}

// freePorts is n free ports of host, all different: each is held until the
// last is chosen (freePort's, closed at once, can come up again).
func freePorts(t *testing.T, host string, n int) []uint16 {
	t.Helper()
	ports := make([]uint16, n)
	for i := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = uint16(l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// lines are the transitions of one socket, told apart by its ports, as
// "OLD->NEW" with the owner's pid.
func lines(recs []tracer.Record, sport, dport uint16) (transitions []string, pids []uint32) {
	for _, r := range recs {
		if r.Type != tracer.RecordBind && r.SPort == sport && r.DPort == dport {
			transitions = append(transitions, r.Old.String()+"->"+r.New.String())
			pids = append(pids, r.PID)
		}
	}
	return transitions, pids
}

// clientPort finds the client's ephemeral port: its socket is the one
// connected to the server port from another port.
func clientPort(recs []tracer.Record, port uint16) uint16 {
	for _, r := range recs {
		if r.Type == tracer.RecordState && r.DPort == port && r.SPort != port && r.SPort != 0 {
			return r.SPort
		}
	}
	return 0
}

var (
	activeClose  = []string{"CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"}
	passiveClose = []string{"ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"}
	// The accepting end starts from the listener; the connecting end is
	// born in CLOSE.
	acceptOpen  = []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED"}
	connectOpen = []string{"CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED"}
	activeTail  = activeClose[2:]
)

func expected(open, closing []string) []string { return append(slices.Clone(open), closing...) }

// loopbackCase runs one connection between three processes (listener,
// accepting child, client), tracing with hooks chosen from table, and checks
// every line: the exact transitions of both sockets in order, and the owner
// of each.
//
// A kernel skips a program's run now and then (a softirq interrupting a run
// under way on its CPU; under qemu's emulation, often enough to matter), and
// some kernels and hook forms skip silently: the kprobes of 6.1. When the
// lines are wrong and the tracer said it missed something (a transition
// without its predecessor, a skipped run nothing made up for, an event
// lost), the case is run once more, and must then be right. Wrong lines
// with nothing said missed fail at once.
func loopbackCase(t *testing.T, listenHost, dialHost string, first closer, probe tracer.ProbeMode, table []hook) {
	problems, missed := loopbackAttempt(t, listenHost, dialHost, first, probe, table)
	if len(problems) > 0 && missed != "" {
		t.Logf("trying again: the tracer %s, and its lines were wrong:\n%s", missed, strings.Join(problems, "\n"))
		problems, _ = loopbackAttempt(t, listenHost, dialHost, first, probe, table)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// loopbackAttempt is one run of loopbackCase: what was wrong with its lines,
// and what the tracer said it missed meanwhile ("" if nothing).
func loopbackAttempt(t *testing.T, listenHost, dialHost string, first closer, probe tracer.ProbeMode, table []hook) (problems []string, missed string) {
	port := freePort(t, listenHost)
	listenAddr := net.JoinHostPort(listenHost, strconv.Itoa(int(port)))
	dialAddr := net.JoinHostPort(dialHost, strconv.Itoa(int(port)))
	rec, src := traceHooks(t, tracer.Config{Ports: tracer.Ports{port}, Probe: probe}, table)

	server := startRole(t, "server", listenAddr, first)
	listenerPID, acceptorPID := uint32(server.cmd.Process.Pid), server.childPID(t)
	client := startRole(t, "client", dialAddr, first)
	clientPID := uint32(client.cmd.Process.Pid)
	client.wait(t)
	server.wait(t)

	wantClient, wantServer := expected(connectOpen, passiveClose), expected(acceptOpen, activeTail)
	if first == clientFirst {
		wantClient, wantServer = activeClose, expected(acceptOpen, passiveClose)
	}
	recs, complete := pollRecords(rec, func(recs []tracer.Record) bool {
		cport := clientPort(recs, port)
		c, _ := lines(recs, cport, port)
		s, _ := lines(recs, port, cport)
		l, _ := lines(recs, port, 0)
		return len(c) >= len(wantClient) && len(s) >= len(wantServer) && len(l) >= 2
	})
	if gaps, lost := rec.gaps(), src.Lost(); gaps > 0 || lost.Total() > 0 {
		missed = fmt.Sprintf("saw %d transitions without their predecessor and lost %+v", gaps, lost)
	}
	if !complete {
		return []string{"timed out waiting for both sockets to close and the listener to go; records:\n" + dump(recs)}, missed
	}
	cport := clientPort(recs, port)

	check := func(who string, sport, dport uint16, want []string, owner uint32) {
		got, pids := lines(recs, sport, dport)
		if !slices.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("%s socket transitions:\n got %v\nwant %v\nrecords:\n%s", who, got, want, dump(recs)))
		}
		for i, pid := range pids {
			if pid != owner {
				problems = append(problems, fmt.Sprintf("%s socket line %d (%s): owner pid %d, want %d", who, i, got[i], pid, owner))
			}
		}
	}
	check("client", cport, port, wantClient, clientPID)
	check("server", port, cport, wantServer, acceptorPID)
	check("listener", port, 0, []string{"CLOSE->LISTEN", "LISTEN->CLOSE"}, listenerPID)
	waitForExits(t, rec, listenerPID, acceptorPID, clientPID)

	// Only the listener's own bind counts: another bind(0), such as Go's
	// probe of IPv4-mapped addresses, may draw the port the test just
	// freed, and is rightly reported too.
	binds := 0
	listenIP := netip.MustParseAddr(listenHost)
	for _, r := range recs {
		if r.Type == tracer.RecordBind && r.SAddr == listenIP {
			binds++
			if r.PID != listenerPID || r.SPort != port || r.Err != 0 {
				problems = append(problems, fmt.Sprintf("bind line: pid %d port %d err %d, want pid %d port %d err 0", r.PID, r.SPort, r.Err, listenerPID, port))
			}
		}
		if r.New == tracer.StateTimeWait && r.TimeoutNs <= 0 {
			problems = append(problems, fmt.Sprintf("TIME_WAIT line without its timeout: %+v", r))
		}
	}
	if binds != 1 {
		problems = append(problems, fmt.Sprintf("got %d bind lines, want 1; records:\n%s", binds, dump(recs)))
	}
	return problems, missed
}

// waitForExits waits until the exits of every process pid are reported,
// once each: a process's exit, not its threads'.
func waitForExits(t *testing.T, rec *recorder, pids ...uint32) {
	t.Helper()
	exits := func() map[uint32]int {
		n := map[uint32]int{}
		for _, ev := range rec.events() {
			if ev.Kind == tracer.KindExit && slices.Contains(pids, ev.PID) {
				n[ev.PID]++
			}
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); len(exits()) < len(pids); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("exits reported %v, want one for each of %v", exits(), pids)
		}
	}
	for pid, n := range exits() {
		if n != 1 {
			t.Errorf("process %d's exit reported %d times (its threads'?), want once", pid, n)
		}
	}
}

// probeModes are the modes worth running on this kernel: forcing kprobes
// only where the kernel has them.
func probeModes(t *testing.T) []tracer.ProbeMode {
	modes := []tracer.ProbeMode{tracer.ProbeAuto, tracer.ProbeTracepoint}
	if kernelHasKprobes(t) {
		modes = append(modes, tracer.ProbeKprobe)
	}
	return modes
}

func kernelHasKprobes(t *testing.T) bool { return probeThisKernel(t).kprobes }

func probeThisKernel(t *testing.T) *kernel {
	t.Helper()
	tracefs, _, err := EnsureTracefs()
	if err != nil {
		t.Fatal(err)
	}
	k, err := probeKernel(tracefs, reason{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKernelLoopbackOwnersAndTransitions(t *testing.T) {
	needPrivileges(t)
	for _, mode := range probeModes(t) {
		// [::] reached over IPv4: the accepted socket is IPv6 with
		// IPv4-mapped addresses, the client's is IPv4.
		for _, hosts := range [][2]string{{"127.0.0.1", "127.0.0.1"}, {"::1", "::1"}, {"::", "127.0.0.1"}} {
			for _, first := range []closer{clientFirst, serverFirst} {
				t.Run(fmt.Sprintf("%s/%s-%s/%s-closes", mode, hosts[0], hosts[1], first), func(t *testing.T) {
					loopbackCase(t, hosts[0], hosts[1], first, mode, defaultHooks)
				})
			}
		}
	}
}

// TestKernelEveryHookFormWorks forces each alternative of each hook that this
// kernel offers, in turn, and checks it traces the same connection as the
// preferred one: a fallback that only attaches is not enough.
func TestKernelEveryHookFormWorks(t *testing.T) {
	needPrivileges(t)
	k := probeThisKernel(t)
	for hi := range defaultHooks {
		h := &defaultHooks[hi]
		for _, alt := range h.alts {
			if ok, why := k.available(h, alt); !ok {
				t.Logf("%s %s not on this kernel: %s", h.name, alt.form, why)
				continue
			}
			// A hook may have two alternatives of one form (bind's):
			// their first programs tell them apart.
			t.Run(string(h.name)+"/"+alt.form.String()+"/"+alt.progs[0].prog, func(t *testing.T) {
				table := slices.Clone(defaultHooks)
				table[hi].alts = []alternative{alt}
				loopbackCase(t, "127.0.0.1", "127.0.0.1", clientFirst, tracer.ProbeAuto, table)
			})
		}
	}
}

func TestKernelBindEADDRINUSE(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	rec, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}})

	server := startRole(t, "server", addr, clientFirst)
	server.childPID(t)
	binder := startRole(t, "bind", addr, clientFirst)
	binderPID := uint32(binder.cmd.Process.Pid)
	binder.wait(t)
	startRole(t, "client", addr, clientFirst).wait(t)
	server.wait(t)

	const eaddrinuse = 98
	waitFor(t, rec, "the failed bind", func(recs []tracer.Record) bool {
		for _, r := range recs {
			if r.Type == tracer.RecordBind && r.PID == binderPID {
				if r.Err != eaddrinuse || r.SPort != port || r.Comm.String() == "" {
					t.Fatalf("failed bind line: %+v, want err EADDRINUSE on port %d", r, port)
				}
				return true
			}
		}
		return false
	})
}

// TestKernelPortFilter checks that traffic on a port outside the watched set
// produces no event at all, not merely no line, and that every port of the
// set is watched.
func TestKernelPortFilter(t *testing.T) {
	needPrivileges(t)
	free := freePorts(t, "127.0.0.1", 3)
	watched, second, other := free[0], free[1], free[2]
	ports := tracer.Ports{watched, second}
	slices.Sort(ports)
	rec, _ := trace(t, tracer.Config{Ports: ports})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(other)))
	server := startRole(t, "server", addr, clientFirst)
	server.childPID(t)
	startRole(t, "client", addr, clientFirst).wait(t)
	server.wait(t)
	// Connections on the watched ports afterwards mark the end: once their
	// lines are in, anything from the other port would be too.
	loopbackTraffic(t, second)
	loopbackTraffic(t, watched)
	waitFor(t, rec, "the watched ports' connections", func(recs []tracer.Record) bool {
		return clientPort(recs, watched) != 0 && clientPort(recs, second) != 0
	})
	// The recorder's own copy: the correlator's counts belong to the
	// source's goroutine.
	if len(rec.events()) == 0 {
		t.Fatal("no events at all")
	}
	for _, r := range rec.records() {
		if r.SPort == other || r.DPort == other {
			t.Fatalf("line for the unwatched port %d: %+v", other, r)
		}
	}
}

// loopbackTraffic makes one connection to port from this process.
func loopbackTraffic(t *testing.T, port uint16) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, s := connectTo(t, l)
	c.Close()
	s.Close()
}

// TestKernelForcedKprobeMode: --probe kprobe works where the kernel has
// kprobes, and elsewhere fails with one line naming what is missing.
func TestKernelForcedKprobeMode(t *testing.T) {
	needPrivileges(t)
	src, err := Open(tracer.Config{Probe: tracer.ProbeKprobe})
	if kernelHasKprobes(t) {
		if err != nil {
			t.Fatalf("Open with --probe kprobe on a kernel with kprobes: %v", err)
		}
		src.Close()
		return
	}
	if err == nil || !strings.Contains(err.Error(), "CONFIG_KPROBES") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Open with --probe kprobe on a kernel without kprobes: %v, want one line naming CONFIG_KPROBES", err)
	}
}

// loadPrograms loads the object's programs, only those named if any, and
// closes them when the test ends.
func loadPrograms(t *testing.T, only ...string) *ebpf.Collection {
	t.Helper()
	return loadReadingInPlace(t, inPlaceReads{}, only...)
}

// loadReadingInPlace is loadPrograms with the programs reading in place
// what reads says.
func loadReadingInPlace(t *testing.T, reads inPlaceReads, only ...string) *ebpf.Collection {
	t.Helper()
	liftMemlock()
	spec, err := bpf.LoadPorttrace()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables[bpf.PorttraceVarBtfSockReads].Set(reads.sock); err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables[bpf.PorttraceVarTaskReads].Set(reads.task); err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables[bpf.PorttraceVarCastReads].Set(reads.cast); err != nil {
		t.Fatal(err)
	}
	for name := range spec.Programs {
		if len(only) > 0 && !slices.Contains(only, name) {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		t.Fatalf("verifier: %+v", verr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(coll.Close)
	return coll
}

// TestKernelEveryProgramPassesVerifier loads every program of the object, the
// kprobe ones included: on a kernel without kprobes they cannot attach,
// but the verifier still checks them. The tp_btf programs are checked
// reading through the helper and reading in place what the kernel allows.
func TestKernelEveryProgramPassesVerifier(t *testing.T) {
	needPrivileges(t)
	k := probeThisKernel(t)
	// All but those that need what the kernel lacks, which are never
	// loaded there.
	spec, err := bpf.LoadPorttrace()
	if err != nil {
		t.Fatal(err)
	}
	lacking := map[string]bool{}
	for _, h := range defaultHooks {
		for _, alt := range h.alts {
			for _, a := range alt.progs {
				lacking[a.prog] = lacking[a.prog] || !k.verifies(a)
			}
		}
	}
	var progs []string
	for name := range spec.Programs {
		if !lacking[name] {
			progs = append(progs, name)
		}
	}
	for _, reads := range []inPlaceReads{{}, k.inPlace} {
		coll := loadReadingInPlace(t, reads, progs...)
		for _, name := range []string{bpf.PorttraceProgStateStoreKprobe, bpf.PorttraceProgStateSetKprobe, bpf.PorttraceProgAcceptKretprobe, bpf.PorttraceProgStateTpBtf} {
			if coll.Programs[name] == nil {
				t.Errorf("%s: program %s not loaded", reads, name)
			}
		}
	}
}

// TestKernelHookChoice checks that auto mode takes the preferred form of
// each hook wherever the kernel has it: the accept kretprobe and the
// timewait kprobes where kprobes exist, tracepoints where they do not.
func TestKernelHookChoice(t *testing.T) {
	needPrivileges(t)
	kprobes := kernelHasKprobes(t)
	for _, tc := range []struct {
		mode tracer.ProbeMode
		want []string
	}{
		{tracer.ProbeAuto, []string{"state: tp_btf inet_sock_set_state", "bind: tracepoint", "exit: tp_btf sched_process_exit"}},
		{tracer.ProbeTracepoint, []string{"state: tp_btf inet_sock_set_state", "accept: tracepoint syscalls/sys_exit_accept", "bind: tracepoint",
			"timewait: tp_btf timer_start", "exit: tp_btf sched_process_exit"}},
	} {
		if tc.mode == tracer.ProbeAuto && kprobes {
			tc.want = append(tc.want, "accept: kretprobe inet_csk_accept", "timewait: kprobe __inet_twsk_schedule")
		} else if tc.mode == tracer.ProbeAuto {
			tc.want = append(tc.want, "accept: tracepoint syscalls/sys_exit_accept", "timewait: tp_btf timer_start")
		}
		src, err := Open(tracer.Config{Probe: tc.mode})
		if err != nil {
			t.Fatal(err)
		}
		hooks := strings.Join(src.Hooks(), "\n")
		src.Close()
		t.Logf("--probe %s on this kernel (kprobes: %v):\n%s", tc.mode, kprobes, hooks)
		for _, w := range tc.want {
			if !strings.Contains(hooks, w) {
				t.Errorf("--probe %s: no hook %q among:\n%s", tc.mode, w, hooks)
			}
		}
	}
	// bind's arguments come from the task's registers from 5.15
	// (bpf_task_pt_regs), from an entry program before.
	wantBind := "bind: tracepoint syscalls/sys_exit_bind: preferred"
	if !kernelAtLeast(t, 5, 15) {
		wantBind = "bind: tracepoint syscalls/sys_enter_bind,syscalls/sys_exit_bind: fallback"
	}
	src, err := Open(tracer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hooks := strings.Join(src.Hooks(), "\n")
	src.Close()
	if !strings.Contains(hooks, wantBind) {
		t.Errorf("no hook %q among:\n%s", wantBind, hooks)
	}
	if kprobes {
		src, err := Open(tracer.Config{Probe: tracer.ProbeKprobe})
		if err != nil {
			t.Fatal(err)
		}
		hooks := strings.Join(src.Hooks(), "\n")
		src.Close()
		t.Logf("--probe kprobe:\n%s", hooks)
		for _, w := range []string{"state: kprobe inet_sk_state_store,inet_sk_set_state", "accept: kretprobe inet_csk_accept", "timewait: kprobe __inet_twsk_schedule"} {
			if !strings.Contains(hooks, w) {
				t.Errorf("--probe kprobe: no hook %q among:\n%s", w, hooks)
			}
		}
	}
}

// TestKernelDetachesEverything: once closed, no program porttrace loaded is
// left in the kernel.
func TestKernelDetachesEverything(t *testing.T) {
	needPrivileges(t)
	before := programIDs(t)
	src, err := Open(tracer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Other tracers come and go meanwhile: look for new ids, not counts.
	if !slices.ContainsFunc(programIDs(t), func(id ebpf.ProgramID) bool { return !slices.Contains(before, id) }) {
		t.Fatal("no program appeared while porttrace was open")
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	// Programs are freed after an RCU grace period.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * batchInterval) {
		var left []ebpf.ProgramID
		for _, id := range programIDs(t) {
			if !slices.Contains(before, id) {
				left = append(left, id)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("programs still loaded after Close: %v", left)
		}
	}
}

// programIDs lists the loaded programs that bear the names of porttrace's
// (the kernel keeps 15 characters of a name).
func programIDs(t *testing.T) []ebpf.ProgramID {
	t.Helper()
	spec, err := bpf.LoadPorttrace()
	if err != nil {
		t.Fatal(err)
	}
	var ids []ebpf.ProgramID
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids
		}
		if err != nil {
			t.Fatal(err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			continue
		}
		for name := range spec.Programs {
			if name[:min(len(name), 15)] == info.Name {
				ids = append(ids, id)
			}
		}
	}
}

// TestKernelFamilyFilterInKernel: with -6, IPv4 traffic makes no event.
func TestKernelFamilyFilterInKernel(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	rec, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}, Family: tracer.FamilyIPv6})
	loopbackTraffic(t, port)
	l, err := net.Listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	waitFor(t, rec, "the IPv6 listener", func(recs []tracer.Record) bool {
		return slices.ContainsFunc(recs, func(r tracer.Record) bool { return r.Type == tracer.RecordListen })
	})
	for _, r := range rec.records() {
		if r.Family != tracer.FamilyIPv6 {
			t.Fatalf("IPv4 line with -6: %+v", r)
		}
	}
}

// TestKernelFamilyFollowsTheTraffic: -4 and -6 split by the traffic, not
// by the socket. An IPv4 connection to a dual-stack [::] listener is IPv4
// at both ends (the server side's addresses are IPv4-mapped), an IPv6
// one is IPv6 at both ends, and the listener, which serves both, shows
// under both with its bind.
func TestKernelFamilyFollowsTheTraffic(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "::")
	v4, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}, Family: tracer.FamilyIPv4})
	v6, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}, Family: tracer.FamilyIPv6})
	p := strconv.Itoa(int(port))
	for _, dial := range []string{"127.0.0.1", "::1"} {
		server := startRole(t, "server", net.JoinHostPort("::", p), clientFirst)
		server.childPID(t)
		startRole(t, "client", net.JoinHostPort(dial, p), clientFirst).wait(t)
		server.wait(t)
	}
	for _, tc := range []struct {
		family tracer.Family
		rec    *recorder
	}{{tracer.FamilyIPv4, v4}, {tracer.FamilyIPv6, v6}} {
		// Per round: a bind and the listener's two lines; for the
		// round of its family, both ends of the connection.
		wantConn := len(activeClose) + len(acceptOpen) + len(passiveClose)
		recs := waitFor(t, tc.rec, tc.family.String()+" lines of both rounds", func(recs []tracer.Record) bool {
			binds, listener, conn := 0, 0, 0
			for _, r := range recs {
				switch {
				case r.Type == tracer.RecordBind && r.SPort == port:
					binds++
				case r.SPort == port && r.DPort == 0:
					listener++
				case r.SPort == port || r.DPort == port:
					conn++
				}
			}
			return binds >= 2 && listener >= 4 && conn >= wantConn
		})
		for _, r := range recs {
			if r.DPort == 0 {
				continue
			}
			if v4 := r.SAddr.Is4() || r.SAddr.Is4In6(); v4 != (tc.family == tracer.FamilyIPv4) {
				t.Errorf("-%d shows a connection line of %v -> %v:\n%s", tc.family, r.SAddr, r.DAddr, dump(recs))
			}
		}
	}
}

// handlerFunc is a tracer.Handler of events alone.
type handlerFunc func(ev *tracer.Event)

func (f handlerFunc) Handle(ev *tracer.Event) { f(ev) }
func (handlerFunc) Tick(int64) int64          { return tracer.NoDeadline }

// TestKernelStopReadsWhatCameBefore: a source stopped while a batch is
// read (its handler slow, as under a snapshot of thousands of sockets
// taken at its first event) still hands on every event written before the
// stop. It used to return at the batch's clock check, and a watch stopped
// right after a connection closed lost its lines.
func TestKernelStopReadsWhatCameBefore(t *testing.T) {
	needPrivileges(t)
	src, err := open(tracer.Config{}, defaultHooks, inPlaceReads{sock: true, task: true, cast: true})
	if err != nil {
		t.Fatalf("opening tracer: %v", err)
	}
	defer src.Close()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Some thousands of events, more than a batch's clock check.
	for range 200 {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if s, err := l.Accept(); err == nil {
			s.Close()
		}
		c.Close()
	}
	marker, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	markerPort := uint16(marker.Addr().(*net.TCPAddr).Port)
	marker.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	events, seen := 0, false
	err = src.Run(ctx, handlerFunc(func(ev *tracer.Event) {
		if events++; events == 1 {
			time.Sleep(2 * batchInterval)
		}
		seen = seen || ev.Kind == tracer.KindState && ev.NewState == tracer.StateListen && ev.SPort == markerPort
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !seen {
		t.Errorf("the last event before the stop (a listen on %d) not handed on; %d events were", markerPort, events)
	}
}
