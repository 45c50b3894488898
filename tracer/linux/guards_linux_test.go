package linux

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/porttrace/porttrace/bpf"
)

// TestGuardIsCount reads struct bpf_prog as three kernels declare it: the
// count is an int per CPU (5.12 on), a byte per interrupt level (proposed
// for arm64), or absent (before 5.12). Only the first is read.
func TestGuardIsCount(t *testing.T) {
	intType := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u8Type := &btf.Int{Name: "u8", Size: 1}
	aux := &btf.Pointer{Target: &btf.Struct{Name: "bpf_prog_aux"}}
	for _, c := range []struct {
		name    string
		members []btf.Member
		want    string
	}{
		{"int per CPU", []btf.Member{{Name: "active", Type: &btf.Pointer{Target: intType}}, {Name: "aux", Type: aux, Offset: 64}}, ""},
		{"byte per level", []btf.Member{{Name: "active", Type: &btf.Pointer{Target: u8Type}}, {Name: "aux", Type: aux, Offset: 64}}, "not an int per CPU"},
		{"none", []btf.Member{{Name: "aux", Type: aux}}, "no count of runs under way"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := btfSpec(t, &btf.Struct{Name: "bpf_prog", Size: 16, Members: c.members})
			got := guardIsCount(spec)
			if c.want == "" && got != "" || !strings.Contains(got, c.want) {
				t.Errorf("guardIsCount = %q, want %q", got, c.want)
			}
		})
	}
	if got := guardIsCount(btfSpec(t, intType)); !strings.Contains(got, "no struct bpf_prog") {
		t.Errorf("guardIsCount without the struct = %q", got)
	}
}

func btfSpec(t *testing.T, types ...btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// TestKernelRescueByGuard checks the second program's reading of the
// kernel's count of runs under way on real traffic: told that its own
// count is the first's, it reads 1 on every run where the kernel guards
// raw tracepoint runs (6.2+, and backported), and so makes up for every
// state change; it reads 0, and makes up for none, where the kernel does
// not. Before 5.12, with no count, the seconds keep to the mark.
func TestKernelRescueByGuard(t *testing.T) {
	needPrivileges(t)
	k := probeThisKernel(t)
	first, second := bpf.PorttraceProgStateTpBtf, bpf.PorttraceProgStateTpBtfRescue
	coll := loadPrograms(t, first, second)
	if why := guardIsCount(k.btf); why != "" {
		// Before 5.12 there is no count: the seconds keep to the mark,
		// and say so.
		if !kernelBefore(kernelRelease(t), 5, 12) {
			t.Fatalf("kernel %s: %s", kernelRelease(t), why)
		}
		line := locateGuards(k, coll, map[bpf.PorttraceRescuedHook]*ebpf.Program{bpf.PorttraceRescuedHookHOOK_STATE: coll.Programs[first]})
		if !strings.Contains(line, "by a mark") || !strings.Contains(line, why) {
			t.Fatalf("kernel %s without the count: %q, want the mark and why", kernelRelease(t), line)
		}
		var offsets guardOffsets
		if err := coll.Variables[bpf.PorttraceVarFirstGuardOffset].Get(&offsets); err != nil {
			t.Fatal(err)
		}
		if offsets != (guardOffsets{}) {
			t.Fatalf("kernel %s without the count: offsets %v set", kernelRelease(t), offsets)
		}
		return
	}
	offsets, err := readGuards(k, coll, map[bpf.PorttraceRescuedHook]*ebpf.Program{
		bpf.PorttraceRescuedHookHOOK_STATE: coll.Programs[second],
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := coll.Variables[bpf.PorttraceVarFirstGuardOffset].Set(offsets); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{first, second} {
		l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[name]})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}

	loopbackTraffic(t, 0)
	rescued := sumRescued(t, coll)
	// The connection's state changes: CLOSE->SYN_SENT, SYN_SENT->
	// ESTABLISHED, LISTEN->SYN_RECV, SYN_RECV->ESTABLISHED, and the first
	// of each side's teardown at least.
	const atLeast = 6
	// 6.2 added the guard; stable kernels before it may have it backported
	// (Debian's 6.1 has): they must read all or nothing.
	mustGuard := !kernelBefore(kernelRelease(t), 6, 2)
	if rescued < atLeast && (mustGuard || rescued != 0) {
		t.Errorf("kernel %s: the second program reading its own count made up for %d runs, want at least %d (or none where raw tracepoint runs are not guarded, before 6.2)", kernelRelease(t), rescued, atLeast)
	}
	t.Logf("kernel %s: made up for %d runs", kernelRelease(t), rescued)
}
