//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// stopTimeout is how long a child gets to exit after SIGINT before it is
// killed: a tracer drains its buffers and prints its summary in that time.
const stopTimeout = 10 * time.Second

// child is a process the harness started and must stop.
type child struct {
	name   string
	cmd    *exec.Cmd
	stderr bytes.Buffer // read only once done is closed
	done   chan struct{}
	err    error // how it exited; set before done is closed
}

// startChild starts cmd (stdin and stdout already set by the caller).
func startChild(name string, cmd *exec.Cmd) (*child, error) {
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stderr = &c.stderr
	// Its own process group: a Ctrl-C on the terminal reaches the harness
	// only, which stops the children itself, tracers with SIGINT so that
	// they detach and print their summaries. Pdeathsig: if the harness is
	// killed, its children die too, and the kernel detaches their probes
	// as their file descriptors close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has ended, and how.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.exitError()
	default:
		return false, nil
	}
}

// stop sends SIGINT, waits, and kills the child if it outlives
// stopTimeout. Calling it again returns the same result.
func (c *child) stop() error {
	if err := c.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("interrupting %s: %w", c.name, err)
	}
	select {
	case <-c.done:
		return c.exitError()
	case <-time.After(stopTimeout):
	}
	c.cmd.Process.Kill()
	<-c.done
	return fmt.Errorf("%s: still running %v after SIGINT: killed", c.name, stopTimeout)
}

// exitError is the child's exit failure with the end of what it said.
func (c *child) exitError() error {
	if c.err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w: %s", c.name, c.err, lastLines(c.stderr.String(), 3))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture porttrace supports.
const clockTicks = 100

// cpuTimes is the user and system CPU time the process has used.
type cpuTimes struct{ user, sys time.Duration }

func (c cpuTimes) total() time.Duration { return c.user + c.sys }

func (c cpuTimes) sub(d cpuTimes) cpuTimes { return cpuTimes{c.user - d.user, c.sys - d.sys} }

func (c cpuTimes) add(d cpuTimes) cpuTimes { return cpuTimes{c.user + d.user, c.sys + d.sys} }

// readCPU reads utime and stime from /proc/PID/stat.
func readCPU(pid int) (cpuTimes, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}, fmt.Errorf("reading cpu time: %w", err)
	}
	c, err := parseStat(string(data))
	if err != nil {
		return cpuTimes{}, fmt.Errorf("reading cpu time from /proc/%d/stat: %w", pid, err)
	}
	return c, nil
}

// parseStat reads utime and stime from a /proc/PID/stat line.
func parseStat(s string) (cpuTimes, error) {
	// The command name may hold spaces and parentheses: fields are counted
	// after its closing parenthesis, where utime and stime are the 12th and
	// 13th (fields 14 and 15 of proc(5)).
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return cpuTimes{}, errors.New("short line")
	}
	var ticks [2]int64
	for i, f := range fields[11:13] {
		var err error
		if ticks[i], err = strconv.ParseInt(f, 10, 64); err != nil {
			return cpuTimes{}, err
		}
	}
	return cpuTimes{time.Duration(ticks[0]) * time.Second / clockTicks, time.Duration(ticks[1]) * time.Second / clockTicks}, nil
}

// wakeups counts the times the process's threads went to sleep waiting and
// were woken: voluntary context switches, summed over its threads (each
// /proc/PID/task/TID/status counts its own thread only).
func wakeups(pid int) (uint64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("reading context switches: %w", err)
	}
	var n uint64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		v, _ := procField(string(data), "voluntary_ctxt_switches")
		n += parseUint(v)
	}
	return n, nil
}

// memoryKiB reads one field of /proc/PID/status, such as VmHWM (peak
// resident set) or VmRSS (current resident set).
func memoryKiB(pid int, field string) (int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", field, err)
	}
	n, err := procKiB(string(data), field)
	if err != nil {
		return 0, fmt.Errorf("reading %s from %s: %w", field, path, err)
	}
	return n, nil
}

// procField is the value of a "Name:   value" line of a /proc file such
// as /proc/PID/status or /proc/meminfo.
func procField(data, name string) (string, bool) {
	for _, line := range strings.Split(data, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// procKiB reads a field given in kB.
func procKiB(data, name string) (int64, error) {
	v, ok := procField(data, name)
	if !ok {
		return 0, fmt.Errorf("no %s", name)
	}
	return strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
}

// progCounters are the kernel's counters of eBPF programs.
type progCounters struct {
	runs   uint64        // run_cnt: counted while BPF statistics are on
	time   time.Duration // run_time_ns: likewise
	misses uint64        // recursion_misses: runs the kernel skipped, always counted
}

func (c progCounters) add(d progCounters) progCounters {
	return progCounters{c.runs + d.runs, c.time + d.time, c.misses + d.misses}
}

// bpfStats are a process's eBPF programs' counters, in all and by name.
type bpfStats struct {
	progCounters
	byName map[string]progCounters
}

func (s *bpfStats) add(d bpfStats) {
	s.progCounters = s.progCounters.add(d.progCounters)
	for name, c := range d.byName {
		if s.byName == nil {
			s.byName = map[string]progCounters{}
		}
		s.byName[name] = s.byName[name].add(c)
	}
}

// progStats reads the counters from /proc/PID/fdinfo of each eBPF program
// the process holds: per process, where bpftool would need the process's
// program ids, and the only place recursion misses show.
func progStats(pid int) (bpfStats, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return bpfStats{}, fmt.Errorf("reading eBPF program statistics: %w", err)
	}
	stats := bpfStats{byName: map[string]progCounters{}}
	seen := map[string]bool{}
	for _, e := range entries {
		if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target != "anon_inode:bpf-prog" {
			continue
		}
		info, err := fdinfo(pid, e.Name())
		if err != nil || seen[info["prog_id"]] {
			continue // closed meanwhile, or a second fd of one program
		}
		seen[info["prog_id"]] = true
		c := fdinfoCounters(info)
		stats.progCounters = stats.progCounters.add(c)
		name := progName(info["prog_id"])
		stats.byName[name] = stats.byName[name].add(c)
	}
	return stats, nil
}

// progName is the name the program was loaded with, or its id.
func progName(id string) string {
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(parseUint(id)))
	if err != nil {
		return "id " + id
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil || info.Name == "" {
		return "id " + id
	}
	return info.Name
}

func fdinfo(pid int, fd string) (map[string]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return nil, err
	}
	return parseFdinfo(string(data)), nil
}

// parseFdinfo reads the "key:\tvalue" lines of /proc/PID/fdinfo/FD.
func parseFdinfo(data string) map[string]string {
	info := map[string]string{}
	for _, line := range strings.Split(data, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			info[k] = strings.TrimSpace(v)
		}
	}
	return info
}

// fdinfoCounters are an eBPF program's counters in its fdinfo; a kernel
// that does not show one (recursion_misses before 5.12) counts 0.
func fdinfoCounters(info map[string]string) progCounters {
	return progCounters{parseUint(info["run_cnt"]), time.Duration(parseUint(info["run_time_ns"])), parseUint(info["recursion_misses"])}
}

// parseUint reads a counter, 0 when the kernel does not show it.
func parseUint(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// waitIdle returns once the process has used no CPU for a while: a tracer
// has then drained what the kernel handed it. It gives up after max.
func waitIdle(pid int, max time.Duration) error {
	const settle = 300 * time.Millisecond
	prev, err := readCPU(pid)
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(max); time.Now().Before(deadline); {
		time.Sleep(settle)
		now, err := readCPU(pid)
		if err != nil {
			return err
		}
		if now == prev {
			return nil
		}
		prev = now
	}
	return nil
}
