package proc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// stat is what Resolve reads from /proc/PID/stat on every call.
type stat struct {
	comm       string
	state      byte // R, S, D, Z...
	ppid       uint32
	startTicks uint64
	rssPages   uint64
}

var errBadStat = errors.New("malformed /proc/PID/stat")

// parseStat reads /proc/PID/stat: "pid (comm) state ppid ... starttime
// vsize rss ...". The name may hold spaces and parentheses, so it runs to
// the last ')'.
func parseStat(b []byte) (stat, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return stat{}, errBadStat
	}
	s := stat{comm: string(b[open+1 : end])}
	// Fields from the state on, numbered as proc(5) numbers them from 3.
	f := strings.Fields(string(b[end+1:]))
	const (
		fieldState = 3
		fieldPPID  = 4
		fieldStart = 22
		fieldRSS   = 24
	)
	if len(f) <= fieldRSS-fieldState || len(f[0]) != 1 {
		return stat{}, errBadStat
	}
	s.state = f[0][0]
	ppid, err1 := strconv.ParseUint(f[fieldPPID-fieldState], 10, 32)
	start, err2 := strconv.ParseUint(f[fieldStart-fieldState], 10, 64)
	rss, err3 := strconv.ParseUint(f[fieldRSS-fieldState], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return stat{}, fmt.Errorf("%w: %w", errBadStat, err)
	}
	s.ppid, s.startTicks, s.rssPages = uint32(ppid), start, rss
	return s, nil
}

// startNs is the start time in ns since boot, at /proc's precision.
func (s *stat) startNs() uint64 { return s.startTicks * tickNs }

// status is what Resolve reads from /proc/PID/status.
type status struct {
	uid uint32
	// namespaceInit: the process is pid 1 of its own pid namespace (the
	// last pid on the NSpid line), the init of a container or of the
	// machine.
	namespaceInit bool
}

// parseStatus reads the real uid ("Uid:\t1000\t1000\t1000\t1000") and the
// pids in each namespace ("NSpid:\t4242\t1") from /proc/PID/status.
func parseStatus(b []byte) (status, error) {
	var st status
	var haveUID bool
	for line := range strings.Lines(string(b)) {
		key, value, _ := strings.Cut(line, ":")
		f := strings.Fields(value)
		switch {
		case key == "Uid" && len(f) > 0:
			uid, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				return status{}, fmt.Errorf("malformed /proc/PID/status: Uid: %w", err)
			}
			st.uid, haveUID = uint32(uid), true
		case key == "NSpid" && len(f) > 0:
			st.namespaceInit = f[len(f)-1] == "1"
		}
	}
	if !haveUID {
		return status{}, errors.New("malformed /proc/PID/status: no Uid line")
	}
	return st, nil
}

// parseProcCgroup reads /proc/PID/cgroup, one "id:controllers:path" line
// per hierarchy, "0::path" for cgroup v2. It returns the v2 path and the
// facts that name the process: from the v2 path where it names a unit or a
// container; on a hybrid machine whose container runtime manages only the
// v1 hierarchies, from the name=systemd one or the first other one that
// does.
func parseProcCgroup(b []byte) (v2 string, named Cgroup) {
	var v1 []string
	for line := range strings.Lines(string(b)) {
		_, rest, _ := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		controllers, path, ok := strings.Cut(rest, ":")
		switch {
		case !ok:
		case controllers == "":
			v2 = path
		case controllers == "name=systemd":
			v1 = append([]string{path}, v1...)
		default:
			v1 = append(v1, path)
		}
	}
	for _, path := range append([]string{v2}, v1...) {
		if c := ParseCgroupPath(path); c.Unit != "" || c.Container != nil {
			named = c
			break
		}
	}
	named.Path = v2
	return v2, named
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted in
// /proc/self/mountinfo ("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime -
// cgroup2 cgroup2 rw"): /sys/fs/cgroup on most machines,
// /sys/fs/cgroup/unified on hybrid ones. "" when it is not mounted, or only
// part of it is (then /proc/PID/cgroup's paths do not lead into it).
func cgroup2Mount(mountinfo []byte) string {
	for line := range strings.Lines(string(mountinfo)) {
		mount, fs, ok := strings.Cut(line, " - ")
		mf, ff := strings.Fields(mount), strings.Fields(fs)
		if ok && len(mf) >= 5 && len(ff) > 0 && ff[0] == "cgroup2" && mf[3] == "/" {
			return unescapeMountinfo(mf[4])
		}
	}
	return ""
}

// unescapeMountinfo undoes mountinfo's octal escapes of space, tab,
// newline and backslash ("\040").
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
