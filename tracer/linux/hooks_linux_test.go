package linux

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/porttrace/porttrace/bpf"
	"github.com/porttrace/porttrace/tracer"
)

// TestHookTableMatchesObject checks the hook table against the compiled
// object, without loading anything: every program it names exists and has
// the type its form attaches, and every program of the object is used by
// some alternative (one that is not is compiled, shipped and never loaded).
func TestHookTableMatchesObject(t *testing.T) {
	spec, err := bpf.LoadPorttrace()
	if err != nil {
		t.Fatal(err)
	}
	progType := map[form]ebpf.ProgramType{
		formTPBTF:      ebpf.Tracing,
		formRawTP:      ebpf.RawTracepoint,
		formTracepoint: ebpf.TracePoint,
		formKprobe:     ebpf.Kprobe,
		formKretprobe:  ebpf.Kprobe,
	}
	// locateGuards runs the one program that is not a hook's.
	used := map[string]bool{bpf.PorttraceProgProgGuards: true}
	for _, h := range defaultHooks {
		for _, alt := range h.alts {
			for _, a := range alt.progs {
				used[a.prog] = true
				p := spec.Programs[a.prog]
				if p == nil {
					t.Errorf("%s %s: no program %s in the object", h.name, alt.form, a.prog)
					continue
				}
				if p.Type != progType[alt.form] {
					t.Errorf("%s %s: program %s is %s, want %s", h.name, alt.form, a.prog, p.Type, progType[alt.form])
				}
			}
		}
	}
	for name := range spec.Programs {
		if !used[name] {
			t.Errorf("program %s is in no hook's alternative", name)
		}
	}
}

// TestHookNotesNameWhatIsMissing: a hook not attached gets one line, which
// names the missing privilege when one is missing (not the kernel features
// that would not help) and says what the watch will not show.
func TestHookNotesNameWhatIsMissing(t *testing.T) {
	noTracefs := reason{text: errTracefsMount.Error(), permission: true}
	hidden := reason{text: errKernelAddressesHidden.Error(), permission: true}
	for _, tc := range []struct {
		name string
		k    *kernel
		want []string
	}{
		{"privileges missing", &kernel{noTracefs: noTracefs, missingTimewait: hidden}, []string{
			"accept hook not attached: tracefs is not mounted, and mounting it at /sys/kernel/tracing needs CAP_SYS_ADMIN: passive sockets are charged to the listener's owner",
			"bind hook not attached: tracefs is not mounted, and mounting it at /sys/kernel/tracing needs CAP_SYS_ADMIN: bind(2) calls and their errors are not shown",
			"timewait hook not attached: reading kernel addresses in /proc/kallsyms needs CAP_SYSLOG (kptr_restrict, perf_event_paranoid): TIME_WAIT is shown as the kernel's state tracepoint reports it (-> CLOSE)",
		}},
		{"kernel features missing", &kernel{noTracefs: reason{text: "mounting tracefs at /sys/kernel/tracing: no such device"}, missingTimewait: reason{text: "no symbol tw_timer_handler in /proc/kallsyms"}}, []string{
			"accept hook not attached (kretprobe: kernel has no kprobes (CONFIG_KPROBES); tracepoint: mounting tracefs at /sys/kernel/tracing: no such device): passive sockets are charged to the listener's owner",
			"bind hook not attached (tracepoint: mounting tracefs at /sys/kernel/tracing: no such device): bind(2) calls and their errors are not shown",
			"timewait hook not attached (kprobe: kernel has no kprobes (CONFIG_KPROBES); tp_btf: no symbol tw_timer_handler in /proc/kallsyms; raw_tp: no symbol tw_timer_handler in /proc/kallsyms): TIME_WAIT is shown as the kernel's state tracepoint reports it (-> CLOSE)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The hooks that need tracefs or kernel addresses: not state
			// and exit, whose forms need only the kernel's BTF.
			table := slices.DeleteFunc(slices.Clone(defaultHooks), func(h hook) bool { return h.name == hookState || h.name == hookExit })
			chosen, notes, err := chooseHooks(tc.k, tracer.ProbeAuto, table)
			if err != nil || len(chosen) > 0 {
				t.Fatalf("chose %v, %v; want no hook and no error", chosen, err)
			}
			if !slices.Equal(notes, tc.want) {
				t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(notes, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestBindReadsArgumentsAtExit: where tracepoint programs can read the
// task's saved registers, bind has no entry tracepoint (which every system
// call of every process pays for); elsewhere the entry program keeps the
// arguments for the exit, and the choice says why.
func TestBindReadsArgumentsAtExit(t *testing.T) {
	tracefs := t.TempDir()
	for _, target := range []string{"syscalls/sys_enter_bind", "syscalls/sys_exit_bind"} {
		dir := filepath.Join(tracefs, "events", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "id"), []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	table := slices.DeleteFunc(slices.Clone(defaultHooks), func(h hook) bool { return h.name != hookBind })
	for _, tc := range []struct {
		taskRegs bool
		progs    []string
		why      string
	}{
		{true, []string{bpf.PorttraceProgBindExitRegs}, "preferred"},
		{false, []string{bpf.PorttraceProgBindEnter, bpf.PorttraceProgBindExit}, "fallback (tracepoint: no bpf_task_pt_regs for tracepoint programs (5.15+))"},
	} {
		chosen, notes, err := chooseHooks(&kernel{tracefs: tracefs, inPlace: inPlaceReads{task: true}, taskPtRegs: tc.taskRegs}, tracer.ProbeAuto, table)
		if err != nil || len(notes) > 0 || len(chosen) != 1 {
			t.Fatalf("taskRegs %v: chose %v, notes %q, %v; want the bind hook", tc.taskRegs, chosen, notes, err)
		}
		var progs []string
		for _, a := range chosen[0].alt.progs {
			progs = append(progs, a.prog)
		}
		if !slices.Equal(progs, tc.progs) || chosen[0].why != tc.why {
			t.Errorf("taskRegs %v: chose %v (%s), want %v (%s)", tc.taskRegs, progs, chosen[0].why, tc.progs, tc.why)
		}
	}
}
