package linux

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKernelMemlockHint: an EPERM from loading names RLIMIT_MEMLOCK while
// the limit is finite on a kernel that charges maps to it, and nothing
// else does; liftMemlock lifts it. Run on every kernel of the VM matrix:
// 5.10 charges the limit, the later ones do not.
func TestKernelMemlockHint(t *testing.T) {
	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &saved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_MEMLOCK, &saved) })
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 64 << 10, Max: saved.Max}); err != nil {
		t.Fatal(err)
	}
	eperm := fmt.Errorf("map create: %w", unix.EPERM)
	t.Logf("the kernel charges eBPF maps to RLIMIT_MEMLOCK: %v", memlockCharged())
	got := memlockHint(eperm)
	if !errors.Is(got, unix.EPERM) || strings.Contains(got.Error(), "RLIMIT_MEMLOCK, 65536 bytes here") != memlockCharged() {
		t.Errorf("EPERM with a 64 KiB limit, the kernel charging the limit %v: %v", memlockCharged(), got)
	}
	if other := fmt.Errorf("map create: %w", unix.EINVAL); memlockHint(other) != other {
		t.Errorf("EINVAL: %v", memlockHint(other))
	}
	liftMemlock()
	var now unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &now); err != nil {
		t.Fatal(err)
	}
	if now.Cur != saved.Max && now.Cur != unix.RLIM_INFINITY {
		t.Errorf("liftMemlock left the limit at %d (hard limit %d)", now.Cur, saved.Max)
	}
	if now.Cur == unix.RLIM_INFINITY && memlockHint(eperm) != eperm {
		t.Errorf("EPERM without a limit: %v", memlockHint(eperm))
	}
}
