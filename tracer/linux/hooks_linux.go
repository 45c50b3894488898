package linux

import (
	"sync"

	"github.com/porttrace/porttrace/tracer"

	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

// form is how a program is attached.
type form uint8

const (
	formTPBTF form = iota + 1
	formRawTP
	formTracepoint
	formKprobe
	formKretprobe
)

var formNames = [...]string{
	formTPBTF:      "tp_btf",
	formRawTP:      "raw_tp",
	formTracepoint: "tracepoint",
	formKprobe:     "kprobe",
	formKretprobe:  "kretprobe",
}

func (f form) String() string { return formNames[f] }

func (f form) isKprobe() bool { return f == formKprobe || f == formKretprobe }

// attachment is one program and where it goes: a tracepoint name
// ("inet_sock_set_state"), a tracefs event ("syscalls/sys_exit_bind") or a
// kernel function. prog is always one of bpf2go's bpf.PorttraceProg*
// constants, never a literal: a program renamed or removed in the C source
// then breaks the build instead of a run.
type attachment struct {
	prog   string
	target string
	// rescue marks the second program of a hook (bpf/porttrace.bpf.c,
	// "Runs the kernel skips"): it acts only for the runs the kernel kept
	// the program before it from, and must be attached after it.
	rescue bool
	// rescued marks the first program of a hook that has a second; hook
	// is then, for both, the hook's index in the programs' per-hook arrays.
	rescued bool
	hook    bpf.PorttraceRescuedHook
	// taskRegs: the program reads its system call's arguments from the
	// registers the task entered the kernel with (bpf_task_pt_regs).
	taskRegs bool
}

// withRescue is a program and its second program on one target.
func withRescue(prog, rescue, target string, hook bpf.PorttraceRescuedHook) []attachment {
	return []attachment{
		{prog: prog, target: target, rescued: true, hook: hook},
		{prog: rescue, target: target, rescue: true, hook: hook},
	}
}

// alternative is one way to implement a hook: all its programs share a form.
type alternative struct {
	form  form
	progs []attachment
}

// hookName names a hook in what porttrace says it attached, and in code
// that treats one hook specially.
type hookName string

const (
	hookState    hookName = "state"
	hookAccept   hookName = "accept"
	hookBind     hookName = "bind"
	hookTimewait hookName = "timewait"
	hookExit     hookName = "exit"
)

// hook is something porttrace needs to see, with its alternatives from most
// to least preferred in auto mode.
type hook struct {
	name hookName
	// without says what is lost when no alternative can be attached; empty
	// for a hook porttrace cannot run without.
	without string
	alts    []alternative
}

// defaultHooks is the table Open uses. Nothing writes it: tests that need
// another table hand it to open.
var defaultHooks = []hook{
	{
		name: hookState,
		alts: []alternative{
			{formTPBTF, withRescue(bpf.PorttraceProgStateTpBtf, bpf.PorttraceProgStateTpBtfRescue, "inet_sock_set_state", bpf.PorttraceRescuedHookHOOK_STATE)},
			{formRawTP, withRescue(bpf.PorttraceProgStateRawTp, bpf.PorttraceProgStateRawTpRescue, "inet_sock_set_state", bpf.PorttraceRescuedHookHOOK_STATE)},
			{formTracepoint, []attachment{{prog: bpf.PorttraceProgStateTracepoint, target: "sock/inet_sock_set_state"}}},
			{formKprobe, []attachment{
				{prog: bpf.PorttraceProgStateStoreKprobe, target: "inet_sk_state_store"},
				{prog: bpf.PorttraceProgStateSetKprobe, target: "inet_sk_set_state"},
			}},
		},
	},
	{
		name:    hookAccept,
		without: "passive sockets are charged to the listener's owner",
		alts: []alternative{
			// The kretprobe also sees accepts that do not go through the
			// accept syscalls (io_uring).
			{formKretprobe, []attachment{{prog: bpf.PorttraceProgAcceptKretprobe, target: "inet_csk_accept"}}},
			{formTracepoint, []attachment{
				{prog: bpf.PorttraceProgAcceptExit, target: "syscalls/sys_exit_accept"},
				{prog: bpf.PorttraceProgAccept4Exit, target: "syscalls/sys_exit_accept4"},
			}},
		},
	},
	{
		name:    hookBind,
		without: "bind(2) calls and their errors are not shown",
		alts: []alternative{
			// No entry tracepoint: while one is attached, every system
			// call of every process pays for it.
			{formTracepoint, []attachment{
				{prog: bpf.PorttraceProgBindExitRegs, target: "syscalls/sys_exit_bind", taskRegs: true},
			}},
			{formTracepoint, []attachment{
				{prog: bpf.PorttraceProgBindEnter, target: "syscalls/sys_enter_bind"},
				{prog: bpf.PorttraceProgBindExit, target: "syscalls/sys_exit_bind"},
			}},
		},
	},
	{
		name:    hookTimewait,
		without: "TIME_WAIT is shown as the kernel's state tracepoint reports it (-> CLOSE)",
		alts: []alternative{
			// The kprobes see every re-arm (an orphan's FIN_WAIT2 turning
			// TIME_WAIT), which the timer tracepoints may miss.
			{formKprobe, []attachment{
				{prog: bpf.PorttraceProgTwScheduleKprobe, target: "__inet_twsk_schedule"},
				{prog: bpf.PorttraceProgTwDescheduleKprobe, target: "inet_twsk_deschedule_put"},
				{prog: bpf.PorttraceProgTwExpireKprobe, target: "tw_timer_handler"},
			}},
			{formTPBTF, slices.Concat(
				withRescue(bpf.PorttraceProgTimerStartTpBtf, bpf.PorttraceProgTimerStartTpBtfRescue, "timer_start", bpf.PorttraceRescuedHookHOOK_TIMER_START),
				withRescue(bpf.PorttraceProgTimerCancelTpBtf, bpf.PorttraceProgTimerCancelTpBtfRescue, "timer_cancel", bpf.PorttraceRescuedHookHOOK_TIMER_CANCEL),
				withRescue(bpf.PorttraceProgTimerExpireTpBtf, bpf.PorttraceProgTimerExpireTpBtfRescue, "timer_expire_entry", bpf.PorttraceRescuedHookHOOK_TIMER_EXPIRE),
			)},
			{formRawTP, slices.Concat(
				withRescue(bpf.PorttraceProgTimerStartRawTp, bpf.PorttraceProgTimerStartRawTpRescue, "timer_start", bpf.PorttraceRescuedHookHOOK_TIMER_START),
				withRescue(bpf.PorttraceProgTimerCancelRawTp, bpf.PorttraceProgTimerCancelRawTpRescue, "timer_cancel", bpf.PorttraceRescuedHookHOOK_TIMER_CANCEL),
				withRescue(bpf.PorttraceProgTimerExpireRawTp, bpf.PorttraceProgTimerExpireRawTpRescue, "timer_expire_entry", bpf.PorttraceRescuedHookHOOK_TIMER_EXPIRE),
			)},
		},
	},
	{
		name:    hookExit,
		without: "a socket whose owner exits stays charged to it, not to the processes that hold it after it (a daemon that forked after listen(), a socket passed on)",
		alts: []alternative{
			{formTPBTF, []attachment{{prog: bpf.PorttraceProgExitTpBtf, target: "sched_process_exit"}}},
			{formRawTP, []attachment{{prog: bpf.PorttraceProgExitRawTp, target: "sched_process_exit"}}},
			{formTracepoint, []attachment{{prog: bpf.PorttraceProgExitTracepoint, target: "sched/sched_process_exit"}}},
		},
	},
}

// reason says why an alternative of a hook cannot be used.
type reason struct {
	text string
	// permission: porttrace lacks a privilege, which the operator can
	// grant; otherwise the kernel lacks something.
	permission bool
}

func (r reason) String() string { return r.text }

// kernel is what porttrace found out about the running kernel, and what it
// may do with it.
type kernel struct {
	// types parses the kernel's BTF once for every load at the start: the
	// probes and the collection (each load would parse it anew, some 15 ms
	// of CPU); btf is what it parsed.
	types     *btf.Cache
	btf       *btf.Spec
	tracefs   string
	noTracefs reason // why tracefs is not there, when tracefs is ""
	haveRawTP bool
	kprobes   bool
	// twTimerHandler is the timewait timers' function, which the timer
	// programs recognise them by; missingTimewait says why it is unknown.
	twTimerHandler  uint64
	missingTimewait reason
	inPlace         inPlaceReads
	// taskPtRegs: tracepoint programs may call bpf_task_pt_regs (5.15+),
	// which takes bpf_get_current_task_btf's task (see readsTaskRegs).
	taskPtRegs bool
}

// readsTaskRegs says whether a tracepoint program may read the current
// task's saved registers, as the in-place reads allowed leave it.
func (k *kernel) readsTaskRegs() bool { return k.inPlace.task && k.taskPtRegs }

// inPlaceReads is what porttrace's programs may read in place, a plain
// load instead of a bpf_probe_read_kernel call (bpf/read.h): in tp_btf
// programs, a TCP socket once bpf_skc_to_tcp_sock (5.9+) has named it one;
// in every program, the current task through bpf_get_current_task_btf
// (5.11+, for every tracing program type alike: probed with tp_btf), and
// the sockets found by hand (a descriptor's, a timer's) once
// bpf_rdonly_cast (6.2+) has typed them.
type inPlaceReads struct {
	sock, task, cast bool
}

// probeInPlaceReads loads a program calling each helper. The features
// package probes helpers with fentry programs, which a kernel can refuse
// while it accepts tp_btf (see probeTPBTF).
func probeInPlaceReads(types *btf.Cache) inPlaceReads {
	const target = "inet_sock_set_state" // its first argument is a struct sock *
	return inPlaceReads{
		sock: probeTPBTF(types, target, asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord), asm.FnSkcToTcpSock.Call()) == nil,
		task: probeTPBTF(types, target, asm.FnGetCurrentTaskBtf.Call()) == nil,
		cast: probeRdonlyCast(types, target),
	}
}

// probeRdonlyCast says whether every kind of program that finds sockets by
// hand (tracepoint: accept, bind; tp_btf and raw_tp: timers; kprobe:
// accept) may call the bpf_rdonly_cast kfunc.
func probeRdonlyCast(types *btf.Cache, target string) bool {
	spec, err := types.Kernel()
	if err != nil {
		return false
	}
	var fn *btf.Func
	var sock *btf.Struct
	if spec.TypeByName("bpf_rdonly_cast", &fn) != nil || spec.TypeByName("sock", &sock) != nil {
		return false
	}
	fnID, err := spec.TypeID(fn)
	if err != nil {
		return false
	}
	sockID, err := spec.TypeID(sock)
	if err != nil {
		return false
	}
	// bpf_rdonly_cast(NULL, the id of struct sock), a call of vmlinux's
	// kfunc by its BTF id.
	body := []asm.Instruction{
		asm.Mov.Imm(asm.R1, 0),
		asm.Mov.Imm(asm.R2, int32(sockID)),
		{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(fnID)},
	}
	if probeTPBTF(types, target, body...) != nil {
		return false
	}
	for _, typ := range []ebpf.ProgramType{ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Kprobe} {
		err := loadProbe(types, &ebpf.ProgramSpec{
			Type:         typ,
			Instructions: append(slices.Clone(body), asm.Mov.Imm(asm.R0, 0), asm.Return()),
			License:      "GPL",
		})
		if err != nil {
			return false
		}
	}
	return true
}

// String says how the programs read the kernel's structures.
func (r inPlaceReads) String() string {
	var inPlace, helper []string
	for _, part := range []struct {
		ok                 bool
		inPlace, throughIt string
	}{
		{r.task, "every program the current task", "the current task (no bpf_get_current_task_btf: 5.11+)"},
		{r.sock, "tp_btf programs the socket of a state change", "the socket of a state change (no bpf_skc_to_tcp_sock for tp_btf: 5.9+)"},
		{r.cast, "the sockets of descriptors and timers", "the sockets of descriptors and timers (no bpf_rdonly_cast: 6.2+)"},
	} {
		if part.ok {
			inPlace = append(inPlace, part.inPlace)
		} else {
			helper = append(helper, part.throughIt)
		}
	}
	switch {
	case len(helper) == 0:
		return "programs read in place: " + strings.Join(inPlace, ", ")
	case len(inPlace) == 0:
		return "programs read through bpf_probe_read_kernel: " + strings.Join(helper, ", ")
	}
	return "programs read in place: " + strings.Join(inPlace, ", ") + "; through bpf_probe_read_kernel: " + strings.Join(helper, ", ")
}

// probeKernel finds out what the kernel offers. It fails only for what
// porttrace cannot run without: BTF and the BPF ring buffer. tracefs is
// where tracefs is mounted, or "" and why not.
func probeKernel(tracefs string, noTracefs reason) (*kernel, error) {
	types := btf.NewCache()
	spec, err := types.Kernel()
	if err != nil {
		return nil, fmt.Errorf("kernel has no BTF (needs CONFIG_DEBUG_INFO_BTF, /sys/kernel/btf/vmlinux): %w", err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return nil, fmt.Errorf("kernel has no BPF ring buffer (needs Linux 5.8+): %w", err)
	}
	k := &kernel{
		types:     types,
		btf:       spec,
		tracefs:   tracefs,
		noTracefs: noTracefs,
		haveRawTP: features.HaveProgramType(ebpf.RawTracepoint) == nil,
		// perf's kprobe PMU (4.17+) or tracefs's kprobe_events: either
		// exists only with CONFIG_KPROBES.
		kprobes: exists("/sys/bus/event_source/devices/kprobe/type") ||
			(tracefs != "" && exists(filepath.Join(tracefs, "kprobe_events"))),
	}
	k.inPlace = probeInPlaceReads(types)
	k.taskPtRegs = features.HaveProgramHelper(ebpf.TracePoint, asm.FnTaskPtRegs) == nil
	k.twTimerHandler, err = kallsymsAddr("tw_timer_handler")
	if err != nil {
		k.missingTimewait = reason{text: err.Error(), permission: errors.Is(err, errKernelAddressesHidden)}
	}
	return k, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// available says whether porttrace can use an alternative of a hook on
// this kernel, and if not, why.
func (k *kernel) available(h *hook, alt alternative) (bool, reason) {
	// The timer programs recognise timewait timers by their handler.
	if h.name == hookTimewait && !alt.form.isKprobe() && k.missingTimewait.text != "" {
		return false, k.missingTimewait
	}
	for _, a := range alt.progs {
		if ok, why := k.hasTarget(alt.form, a.target); !ok {
			return false, why
		}
		if !k.verifies(a) {
			return false, reason{text: "no bpf_task_pt_regs for tracepoint programs (5.15+)"}
		}
	}
	return true, reason{}
}

// verifies says whether the kernel's verifier takes program a, which may
// call a helper the kernel lacks.
func (k *kernel) verifies(a attachment) bool { return !a.taskRegs || k.readsTaskRegs() }

func (k *kernel) hasTarget(f form, target string) (bool, reason) {
	switch f {
	case formTPBTF, formRawTP:
		var fn *btf.Typedef
		if err := k.btf.TypeByName("btf_trace_"+target, &fn); err != nil {
			return false, reason{text: "no tracepoint " + target + " in kernel BTF"}
		}
		if f == formRawTP && !k.haveRawTP {
			return false, reason{text: "no raw tracepoint programs (needs 4.17+)"}
		}
		if f == formTPBTF {
			if err := probeTPBTF(k.types, target); err != nil {
				return false, reason{text: "tp_btf programs do not load: " + err.Error()}
			}
		}
	case formTracepoint:
		if k.tracefs == "" {
			return false, k.noTracefs
		}
		return tracepointReadable(k.tracefs, target)
	case formKprobe, formKretprobe:
		if !k.kprobes {
			return false, reason{text: "kernel has no kprobes (CONFIG_KPROBES)"}
		}
		var fn *btf.Func
		if err := k.btf.TypeByName(target, &fn); err != nil {
			return false, reason{text: "no function " + target + " in kernel BTF"}
		}
	}
	return true, reason{}
}

// tracepointReadable says whether porttrace may read a tracefs event's id,
// which attaching to it takes. tracefs is root's alone (mode 0700) unless
// mounted otherwise: CAP_BPF and CAP_PERFMON do not open it. access(2)
// asks with porttrace's effective ids and capabilities.
func tracepointReadable(tracefs, target string) (bool, reason) {
	id := filepath.Join(tracefs, "events", target, "id")
	err := unix.Faccessat(unix.AT_FDCWD, id, unix.R_OK, unix.AT_EACCESS)
	switch {
	case err == nil:
		return true, reason{}
	case errors.Is(err, unix.ENOENT):
		return false, reason{text: "no tracepoint " + target}
	case errors.Is(err, unix.EACCES):
		return false, reason{text: "reading " + id + " needs read access to tracefs (root, or CAP_DAC_READ_SEARCH)", permission: true}
	}
	return false, reason{text: fmt.Sprintf("checking %s: %v", id, err)}
}

// probeTPBTF loads a tp_btf program on a tracepoint: body (which may be
// nothing), then return 0. The features package probes tracing programs
// with fentry, which a kernel can refuse (EPERM) while it accepts tp_btf.
func probeTPBTF(types *btf.Cache, target string, body ...asm.Instruction) error {
	return loadProbe(types, &ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     target,
		Instructions: append(body, asm.Mov.Imm(asm.R0, 0), asm.Return()),
		License:      "GPL",
	})
}

// loadProbe loads a probe program, finding its target among types, and
// unloads it: whether the kernel accepted it is the answer.
func loadProbe(types *btf.Cache, prog *ebpf.ProgramSpec) error {
	coll, err := ebpf.NewCollectionWithOptions(&ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{"probe": prog}},
		ebpf.CollectionOptions{Cache: types})
	if err != nil {
		return err
	}
	coll.Close()
	return nil
}

// iterSockFromFile reports whether an iter/task_file program may call
// bpf_sock_from_file (5.11+), which gives the socket of a file its type so
// that the owner iterator reads it in place: a program that hands the
// helper the iterator's file loads only where it may. The daemon runs the
// iterator again and again; the kernel is probed once, with the kernel
// types of the first run's load.
func iterSockFromFile(types *btf.Cache) bool {
	sockFromFile.once.Do(func() { sockFromFile.ok = probeIterSockFromFile(types) })
	return sockFromFile.ok
}

var sockFromFile struct {
	once sync.Once
	ok   bool
}

func probeIterSockFromFile(types *btf.Cache) bool {
	spec, err := types.Kernel()
	if err != nil {
		return false
	}
	var ctx *btf.Struct
	if err := spec.TypeByName("bpf_iter__task_file", &ctx); err != nil {
		return false
	}
	file, ok := memberOffset(ctx.Members, "file")
	if !ok {
		return false
	}
	return loadProbe(types, &ebpf.ProgramSpec{
		Type:       ebpf.Tracing,
		AttachType: ebpf.AttachTraceIter,
		AttachTo:   "task_file",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R1, asm.R1, int16(file), asm.DWord),
			asm.JEq.Imm(asm.R1, 0, "out"),
			asm.FnSockFromFile.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		},
		License: "GPL",
	}) == nil
}

// memberOffset finds the member called name, within the anonymous unions
// and structs the kernel wraps an iterator's context fields in, and gives
// its offset in bytes.
func memberOffset(members []btf.Member, name string) (uint32, bool) {
	for _, m := range members {
		if m.Name == name {
			return m.Offset.Bytes(), true
		}
		if m.Name != "" {
			continue
		}
		var inner []btf.Member
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Union:
			inner = t.Members
		case *btf.Struct:
			inner = t.Members
		}
		if off, ok := memberOffset(inner, name); ok {
			return m.Offset.Bytes() + off, true
		}
	}
	return 0, false
}

// choice is the alternative picked for a hook, with the reason.
type choice struct {
	hook *hook
	alt  alternative
	why  string
}

// chooseHooks picks, for every hook of the table, the first alternative the
// mode allows and the kernel has. It fails when a hook porttrace needs has
// none, or the mode demands kprobes the kernel lacks. notes say, one line
// for each hook not attached, why (naming the missing privilege where one
// is missing) and what the watch will not show.
func chooseHooks(k *kernel, mode tracer.ProbeMode, table []hook) ([]choice, []string, error) {
	var chosen []choice
	var notes []string
	for i := range table {
		h := &table[i]
		allowed := allowedAlternatives(h, mode)
		var reasons []string
		// The privilege the preferred alternative lacks, if any: granting
		// it gets the best of the hook.
		permission := ""
		picked := false
		for _, alt := range allowed {
			ok, why := k.available(h, alt)
			if !ok {
				// Two alternatives of one form may lack the same.
				if r := alt.form.String() + ": " + why.text; !slices.Contains(reasons, r) {
					reasons = append(reasons, r)
				}
				if why.permission && permission == "" {
					permission = why.text
				}
				continue
			}
			because := "preferred"
			if len(reasons) > 0 {
				because = "fallback (" + strings.Join(reasons, "; ") + ")"
			}
			chosen = append(chosen, choice{hook: h, alt: alt, why: because})
			picked = true
			break
		}
		if picked {
			continue
		}
		detail := strings.Join(reasons, "; ")
		if h.without == "" || (mode == tracer.ProbeKprobe && hasKprobeForm(h)) {
			return nil, nil, fmt.Errorf("no usable %s hook for --probe %s: %s", h.name, mode, detail)
		}
		// A privilege the operator can grant is what to say; the
		// alternatives the kernel lacks would not help.
		if permission != "" {
			notes = append(notes, fmt.Sprintf("%s hook not attached: %s: %s", h.name, permission, h.without))
		} else {
			notes = append(notes, fmt.Sprintf("%s hook not attached (%s): %s", h.name, detail, h.without))
		}
	}
	return chosen, notes, nil
}

func hasKprobeForm(h *hook) bool {
	for _, alt := range h.alts {
		if alt.form.isKprobe() {
			return true
		}
	}
	return false
}

// allowedAlternatives filters a hook's alternatives by the probe mode: a
// forced kprobe mode keeps only kprobes where the hook has one, a forced
// tracepoint mode drops kprobes.
func allowedAlternatives(h *hook, mode tracer.ProbeMode) []alternative {
	var out []alternative
	for _, alt := range h.alts {
		switch {
		case mode == tracer.ProbeTracepoint && alt.form.isKprobe():
		case mode == tracer.ProbeKprobe && hasKprobeForm(h) && !alt.form.isKprobe():
		default:
			out = append(out, alt)
		}
	}
	return out
}

// kretprobeMaxActive is how many inet_csk_accept calls may be in flight at
// once (each blocked accept holds one); the kernel's default of 2 x CPUs
// would miss accepts on servers with many accepting threads.
const kretprobeMaxActive = 4096

func attach(alt alternative, a attachment, prog *ebpf.Program) (link.Link, error) {
	switch alt.form {
	case formTPBTF:
		return link.AttachTracing(link.TracingOptions{Program: prog})
	case formRawTP:
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: a.target, Program: prog})
	case formTracepoint:
		group, name, _ := strings.Cut(a.target, "/")
		return link.Tracepoint(group, name, prog, nil)
	case formKprobe:
		return link.Kprobe(a.target, prog, nil)
	case formKretprobe:
		return link.Kretprobe(a.target, prog, &link.KprobeOptions{RetprobeMaxActive: kretprobeMaxActive})
	}
	return nil, errors.New("unknown attach form")
}
