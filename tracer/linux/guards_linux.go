package linux

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/porttrace/porttrace/bpf"
)

// guardOffsets is the programs' first_guard_offset: for each hook with a
// second program, where the kernel keeps its first program's count of
// runs under way, relative to the programs' per-CPU struct running.
type guardOffsets [bpf.PorttraceRescuedHookRESCUED_HOOKS]uint64

// locateGuards tells each hook's second program where the kernel counts
// the runs of its first under way (bpf/porttrace.bpf.c, "Runs the kernel
// skips"), found by the prog_guards iterator in the kernel's list of
// programs. firsts are the first programs by hook. It returns the line that
// says how the second programs know a skipped run: by that count, exact,
// or, where it cannot be located, by the first's mark, which misses the
// runs skipped just before or after a run of the first.
func locateGuards(k *kernel, coll *ebpf.Collection, firsts map[bpf.PorttraceRescuedHook]*ebpf.Program) string {
	const byMark = "runs the kernel skips: the second programs know them by a mark the first sets while it runs, and miss those skipped just before or after a run"
	if len(firsts) == 0 {
		return ""
	}
	if why := guardIsCount(k.btf); why != "" {
		return byMark + " (" + why + ")"
	}
	offsets, err := readGuards(k, coll, firsts)
	if err != nil {
		return byMark + " (" + err.Error() + ")"
	}
	if err := coll.Variables[bpf.PorttraceVarFirstGuardOffset].Set(offsets); err != nil {
		return byMark + " (" + err.Error() + ")"
	}
	return "runs the kernel skips: the second programs know them by the kernel's count of the first's runs under way on their CPU"
}

// guardIsCount says why a kernel's struct bpf_prog has no count of the
// program's runs under way on a CPU (active, an int per CPU), or "".
func guardIsCount(spec *btf.Spec) string {
	var prog *btf.Struct
	if err := spec.TypeByName("bpf_prog", &prog); err != nil {
		return "no struct bpf_prog in the kernel's BTF"
	}
	for _, m := range prog.Members {
		if m.Name != "active" {
			continue
		}
		if ptr, ok := btf.UnderlyingType(m.Type).(*btf.Pointer); ok {
			if n, ok := btf.UnderlyingType(ptr.Target).(*btf.Int); ok && n.Size == 4 {
				return ""
			}
		}
		return "the kernel's struct bpf_prog.active is not an int per CPU"
	}
	return "the kernel's struct bpf_prog has no count of runs under way (5.12+)"
}

// readGuards runs the prog_guards iterator once and works out each first
// program's offset from its record.
func readGuards(k *kernel, coll *ebpf.Collection, firsts map[bpf.PorttraceRescuedHook]*ebpf.Program) (guardOffsets, error) {
	var offsets guardOffsets
	spec, err := bpf.LoadPorttrace()
	if err != nil {
		return offsets, err
	}
	var objs struct {
		Iter *ebpf.Program `ebpf:"prog_guards"`
	}
	opts := &ebpf.CollectionOptions{
		Cache:           k.types,
		MapReplacements: map[string]*ebpf.Map{bpf.PorttraceMapRunning: coll.Maps[bpf.PorttraceMapRunning]},
	}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		return offsets, fmt.Errorf("loading iter/bpf_prog: %w", err)
	}
	defer objs.Iter.Close()
	var records []bpf.PorttraceProgGuard
	err = runIterator(objs.Iter, "iter/bpf_prog", func(r io.Reader) error {
		out, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		records = make([]bpf.PorttraceProgGuard, len(out)/binary.Size(bpf.PorttraceProgGuard{}))
		return binary.Read(bytes.NewReader(out), binary.NativeEndian, records)
	})
	if err != nil {
		return offsets, err
	}
	byID := make(map[uint32]bpf.PorttraceProgGuard, len(records))
	for _, g := range records {
		byID[g.Id] = g
	}
	for hook, prog := range firsts {
		info, err := prog.Info()
		if err != nil {
			return offsets, fmt.Errorf("reading a program's id: %w", err)
		}
		id, _ := info.ID()
		g, ok := byID[uint32(id)]
		if !ok || g.Runs == 0 || g.Running == 0 {
			return offsets, fmt.Errorf("iter/bpf_prog did not show program %s (id %d)", info.Name, id)
		}
		offsets[hook] = g.Runs - g.Running
	}
	return offsets, nil
}
