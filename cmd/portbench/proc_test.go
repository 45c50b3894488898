//go:build linux

package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       cpuTimes
		wantErr    bool
	}{
		// utime 4242 and stime 17 ticks (fields 14 and 15), of 10 ms each.
		{"plain", "27806 (porttrace) S 27097 27097 16657 0 -1 4194304 99 0 0 0 4242 17 0 0 20 0 9 0 66597 3133440 379 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
			cpuTimes{42420 * time.Millisecond, 170 * time.Millisecond}, false},
		{"a command name with spaces and parentheses", "4711 (tmux: a) b (c)) S 1 4711 4711 0 -1 4194560 836 0 0 0 301 2 0 0 20 0 1 0 1234 9846784 1101 18446744073709551615\n",
			cpuTimes{3010 * time.Millisecond, 20 * time.Millisecond}, false},
		{"short", "27806 (cat) R 27097 27097 16657 0 -1\n", cpuTimes{}, true},
		{"not a number", "27806 (cat) R 27097 27097 16657 0 -1 4194304 99 0 0 0 x 0 0 0 20\n", cpuTimes{}, true},
	} {
		got, err := parseStat(tc.line)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: got %+v, %v; want %+v, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

// statusSample is the part of a /proc/PID/status the harness reads.
const statusSample = `Name:	porttrace
Umask:	0022
State:	S (sleeping)
Tgid:	27886
VmPeak:	 1261700 kB
VmHWM:	   41948 kB
VmRSS:	   38112 kB
Threads:	9
voluntary_ctxt_switches:	1234
nonvoluntary_ctxt_switches:	56
`

const meminfoSample = `MemTotal:       24684084 kB
MemFree:        23249876 kB
MemAvailable:   24179360 kB
`

func TestProcFields(t *testing.T) {
	for _, tc := range []struct {
		data, name string
		want       int64
		wantErr    bool
	}{
		{statusSample, "VmHWM", 41948, false},
		{statusSample, "VmRSS", 38112, false},
		{statusSample, "VmSwap", 0, true},
		{meminfoSample, "MemTotal", 24684084, false},
		{"VmRSS:\t   n/a kB\n", "VmRSS", 0, true},
	} {
		got, err := procKiB(tc.data, tc.name)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("procKiB(%s) = %d, %v; want %d, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	// voluntary, not nonvoluntary, context switches: the wakeups.
	if v, ok := procField(statusSample, "voluntary_ctxt_switches"); v != "1234" || !ok {
		t.Errorf("voluntary_ctxt_switches = %q, %v; want 1234", v, ok)
	}
}

func TestFdinfoCounters(t *testing.T) {
	// /proc/PID/fdinfo/FD of an eBPF program, as 6.x kernels write it.
	info := parseFdinfo(`pos:	0
flags:	02000002
mnt_id:	17
ino:	1030
prog_type:	26
prog_jited:	1
prog_tag:	fc62db919092b405
memlock:	4096
prog_id:	2795
run_time_ns:	73141592
run_cnt:	200040
recursion_misses:	440
verified_insns:	250
`)
	if info["prog_id"] != "2795" {
		t.Errorf("prog_id %q, want 2795", info["prog_id"])
	}
	if got, want := fdinfoCounters(info), (progCounters{runs: 200040, time: 73141592, misses: 440}); got != want {
		t.Errorf("counters %+v, want %+v", got, want)
	}
	// Before 5.12 there is no recursion_misses; without BPF statistics on,
	// the run counters are 0.
	old := parseFdinfo("prog_type:\t5\nprog_id:\t12\nrun_time_ns:\t0\nrun_cnt:\t0\n")
	if got := fdinfoCounters(old); got != (progCounters{}) {
		t.Errorf("counters without recursion_misses %+v, want none", got)
	}
}

func TestParseStormOutput(t *testing.T) {
	for _, tc := range []struct {
		out       string
		wantConns int
		wantSecs  float64
		wantErr   bool
	}{
		{"connections=20000 seconds=2.611 rate=7659 transitions=200000\n", 20000, 2.611, false},
		{"connections=3 seconds=0.001 rate=2545 transitions=30\n", 3, 0.001, false},
		{"connections=3 seconds=0.000 rate=+Inf transitions=30\n", 0, 0, true},
		{"portstorm: dial tcp4 127.0.0.1:24000: connect: connection refused\n", 0, 0, true},
		{"", 0, 0, true},
	} {
		conns, secs, err := parseStormOutput(tc.out)
		if conns != tc.wantConns || secs != tc.wantSecs || (err != nil) != tc.wantErr {
			t.Errorf("%q: got %d, %g, %v; want %d, %g, error %v", tc.out, conns, secs, err, tc.wantConns, tc.wantSecs, tc.wantErr)
		}
	}
}

// TestProcSelf reads this process's own files: the kernel's formats, not
// only the samples above.
func TestProcSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := readCPU(pid); err != nil {
		t.Error(err)
	}
	if kib, err := memoryKiB(pid, "VmRSS"); err != nil || kib <= 0 {
		t.Errorf("VmRSS: %d kB, %v", kib, err)
	}
	if _, err := wakeups(pid); err != nil {
		t.Error(err)
	}
	if memTotal() == "unknown" {
		t.Error("MemTotal not read from /proc/meminfo")
	}
}
