package metrics

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProcessMetrics reads back what the scrape says of this process
// against what the kernel says.
func TestProcessMetrics(t *testing.T) {
	text := scrape(t, New(Options{}))
	value := func(name string) float64 {
		t.Helper()
		for line := range strings.Lines(text) {
			var v float64
			if _, err := fmt.Sscanf(line, name+" %g", &v); err == nil {
				return v
			}
		}
		t.Fatalf("the scrape has no %s", name)
		return 0
	}
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		t.Fatal(err)
	}
	if got := value("process_max_fds"); got != float64(limit.Cur) {
		t.Errorf("process_max_fds %g, want the soft limit %d", got, limit.Cur)
	}
	if got := value("process_open_fds"); got < 3 {
		t.Errorf("process_open_fds %g, want stdin, stdout and stderr at least", got)
	}
	if got := value("process_resident_memory_bytes"); got < 1<<20 || got > value("process_virtual_memory_bytes") {
		t.Errorf("process_resident_memory_bytes %g: not a Go process's", got)
	}
	start := time.Unix(int64(value("process_start_time_seconds")), 0)
	if age := time.Since(start); age < -2*time.Second || age > 10*time.Minute {
		t.Errorf("process_start_time_seconds says the test started %v ago", age)
	}
	if got := value("go_goroutines"); got < 1 {
		t.Errorf("go_goroutines %g", got)
	}
}
