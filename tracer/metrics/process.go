package metrics

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// writeProcess writes the process's CPU time, memory, file descriptors
// and start time under the names every Prometheus client uses
// (process_*), read from /proc/self; where there is no /proc, there are
// none.
func writeProcess(e *exposition) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted from the third (the state) come after its closing one.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	field := func(n int) float64 {
		if n-3 >= len(fields) {
			return 0
		}
		v, _ := strconv.ParseFloat(fields[n-3], 64)
		return v
	}
	// The kernel counts CPU time and start time in USER_HZ ticks: 100 a
	// second on every architecture Linux has.
	const userHZ = 100
	e.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
	e.sample("process_cpu_seconds_total", (field(14)+field(15))/userHZ)
	e.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
	e.sample("process_virtual_memory_bytes", field(23))
	e.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
	e.sample("process_resident_memory_bytes", field(24)*float64(os.Getpagesize()))
	if boot := bootTime(); boot > 0 {
		e.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
		e.sample("process_start_time_seconds", boot+field(22)/userHZ)
	}
	if fds, err := os.Open("/proc/self/fd"); err == nil {
		names, err := fds.Readdirnames(-1)
		fds.Close()
		if err == nil {
			e.family("process_open_fds", "gauge", "Number of open file descriptors.")
			e.sample("process_open_fds", float64(len(names)-1)) // less the one reading the directory
		}
	}
	if max := maxOpenFiles(); max > 0 {
		e.family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
		e.sample("process_max_fds", max)
	}
}

// bootTime is when the machine booted, in seconds since the epoch: the
// btime line of /proc/stat.
func bootTime() float64 {
	rest, _ := procLine("/proc/stat", "btime ")
	v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
	return v
}

// maxOpenFiles is the soft limit on open files, from /proc/self/limits;
// 0 when it cannot be read or is unlimited.
func maxOpenFiles() float64 {
	rest, _ := procLine("/proc/self/limits", "Max open files")
	if f := strings.Fields(rest); len(f) > 0 {
		v, _ := strconv.ParseFloat(f[0], 64)
		return v
	}
	return 0
}

// procLine is the rest of the first line of a /proc file that starts with
// prefix.
func procLine(path, prefix string) (string, bool) {
	text, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	for line := range strings.Lines(string(text)) {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// writeRuntime writes the Go runtime's goroutines and heap under the
// names of Prometheus's Go client (go_*).
func writeRuntime(e *exposition) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	e.family("go_goroutines", "gauge", "Number of goroutines that currently exist.")
	e.sample("go_goroutines", float64(runtime.NumGoroutine()))
	e.family("go_info", "gauge", "Information about the Go environment.")
	e.sample("go_info", 1, "version", runtime.Version())
	e.family("go_memstats_alloc_bytes", "gauge", "Number of bytes allocated in heap and currently in use.")
	e.sample("go_memstats_alloc_bytes", float64(ms.HeapAlloc))
	e.family("go_memstats_heap_inuse_bytes", "gauge", "Number of heap bytes that are in use.")
	e.sample("go_memstats_heap_inuse_bytes", float64(ms.HeapInuse))
	e.family("go_memstats_sys_bytes", "gauge", "Number of bytes obtained from system.")
	e.sample("go_memstats_sys_bytes", float64(ms.Sys))
	e.family("go_memstats_last_gc_time_seconds", "gauge", "Number of seconds since 1970 of last garbage collection.")
	e.sample("go_memstats_last_gc_time_seconds", float64(ms.LastGC)/float64(time.Second))
	e.family("go_gc_cycles_total", "counter", "Number of completed GC cycles.")
	e.sample("go_gc_cycles_total", float64(ms.NumGC))
}
