package linux

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Capability numbers from linux/capability.h; CAP_BPF and CAP_PERFMON split
// out of CAP_SYS_ADMIN in 5.8.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// ErrPrivileges is returned when porttrace lacks the capabilities to load
// and attach eBPF programs.
var ErrPrivileges = errors.New("needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8): run as root, e.g. with sudo")

// capabilities reads porttrace's effective capabilities: has says whether
// one is among them.
func capabilities() (has func(c uint) bool, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("reading capabilities: %w", err)
	}
	return func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }, nil
}

// checkPrivileges fails early, with one clear line, where loading would fail
// later with a bare EPERM.
func checkPrivileges() error {
	has, err := capabilities()
	if err != nil {
		return err
	}
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return ErrPrivileges
}

// liftMemlock lifts RLIMIT_MEMLOCK, which kernels before 5.11 charge
// eBPF maps to; later ones charge the memory cgroup, and the limit does
// nothing. Past the hard limit it needs CAP_SYS_RESOURCE; where it cannot
// go there, loading may fail on such a kernel, and memlockHint says why.
// (cilium/ebpf's rlimit package tells the kernels apart by creating a map
// when the program starts, in every command, --help included.)
func liftMemlock() {
	lim := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil || unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) != nil {
		return
	}
	lim.Cur = lim.Max
	_ = unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim)
}

// memlockHint names RLIMIT_MEMLOCK in an EPERM from creating eBPF maps
// where the kernel charges them to it and liftMemlock could not lift it.
// Elsewhere the EPERM has another cause, which the limit would only hide.
func memlockHint(err error) error {
	var lim unix.Rlimit
	if !errors.Is(err, unix.EPERM) || unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) != nil || lim.Cur == unix.RLIM_INFINITY || !memlockCharged() {
		return err
	}
	return fmt.Errorf("%w (kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK, %d bytes here: run as root or with CAP_SYS_RESOURCE, or raise ulimit -l)", err, lim.Cur)
}

// memlockCharged says whether the kernel charges eBPF maps to
// RLIMIT_MEMLOCK: those before 5.11 count the pages in a struct
// bpf_map_memory of each map, which went when the memory cgroup took over
// the charge. Without BTF to tell, it may.
func memlockCharged() bool {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return true
	}
	var memory *btf.Struct
	return spec.TypeByName("bpf_map_memory", &memory) == nil
}

// tracefsPath is where porttrace mounts tracefs when nothing has.
const tracefsPath = "/sys/kernel/tracing"

// errTracefsMount says that tracefs is not mounted and porttrace may not
// mount it.
var errTracefsMount = errors.New("tracefs is not mounted, and mounting it at " + tracefsPath + " needs CAP_SYS_ADMIN")

// EnsureTracefs returns where tracefs is mounted, mounting it when it is
// not: classic tracepoints and kprobe_events live there. mounted says that
// this call mounted it. It stays mounted, as systemd mounts it at boot:
// unmounting it on exit would pull it from under any other tracer (or
// porttrace) started meanwhile. Exported for cmd/portbench, whose peers
// (tcpstates, bpftrace) need it too.
func EnsureTracefs() (path string, mounted bool, err error) {
	for _, p := range []string{tracefsPath, "/sys/kernel/debug/tracing"} {
		var fs unix.Statfs_t
		if unix.Statfs(p, &fs) == nil && fs.Type == unix.TRACEFS_MAGIC {
			return p, false, nil
		}
	}
	has, err := capabilities()
	if err != nil {
		return "", false, err
	}
	if !has(capSysAdmin) {
		return "", false, errTracefsMount
	}
	if err := unix.Mount("nodev", tracefsPath, "tracefs", 0, ""); err != nil {
		return "", false, fmt.Errorf("mounting tracefs at %s: %w", tracefsPath, err)
	}
	return tracefsPath, true, nil
}

// errKernelAddressesHidden: /proc/kallsyms shows every address as 0 to
// whoever lacks CAP_SYSLOG, unless kptr_restrict is 0 and
// perf_event_paranoid at most 1.
var errKernelAddressesHidden = errors.New("reading kernel addresses in /proc/kallsyms needs CAP_SYSLOG (kptr_restrict, perf_event_paranoid)")

// kallsymsAddr returns the address of a kernel symbol.
func kallsymsAddr(symbol string) (uint64, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return 0, fmt.Errorf("reading kernel symbols: %w", err)
	}
	defer f.Close()
	want := []byte(" " + symbol)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "ffffffff820089f0 t tw_timer_handler" (module symbols add " [mod]")
		line := sc.Bytes()
		addr, rest, ok := bytes.Cut(line, []byte(" "))
		if !ok || len(rest) < 2 || !bytes.Equal(rest[1:], want) {
			continue
		}
		a, err := strconv.ParseUint(string(addr), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing /proc/kallsyms line %q: %w", line, err)
		}
		if a == 0 {
			return 0, errKernelAddressesHidden
		}
		return a, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading /proc/kallsyms: %w", err)
	}
	return 0, fmt.Errorf("no symbol %s in /proc/kallsyms", symbol)
}

// monotonicNs reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monotonicNs() int64 {
	var ts unix.Timespec
	// CLOCK_MONOTONIC cannot fail on Linux.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// jiffyNs is the length of a jiffy: the resolution of the coarse clocks is
// the kernel tick, 1e9/CONFIG_HZ nanoseconds.
func jiffyNs() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 0, fmt.Errorf("reading the kernel tick: %w", err)
	}
	return uint64(ts.Nano()), nil
}
