package linux

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMemlockHint: an EPERM from loading names RLIMIT_MEMLOCK while the
// limit is finite, and nothing else does; liftMemlock lifts it.
func TestMemlockHint(t *testing.T) {
	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &saved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_MEMLOCK, &saved) })
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 64 << 10, Max: saved.Max}); err != nil {
		t.Fatal(err)
	}
	eperm := fmt.Errorf("map create: %w", unix.EPERM)
	if got := memlockHint(eperm); !errors.Is(got, unix.EPERM) || !strings.Contains(got.Error(), "RLIMIT_MEMLOCK, 65536 bytes here") {
		t.Errorf("EPERM with a 64 KiB limit: %v", got)
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
