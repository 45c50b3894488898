package linux

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/porttrace/porttrace/bpf"
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
	used := map[string]bool{}
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
