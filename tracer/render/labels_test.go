package render

import (
	"strings"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
)

// TestLabelsNameOnce: each namespace and cgroup is named once, the first
// time a line of it is printed, even one that cannot be named (after its
// first seconds); the watch's own namespace and unknown ids never.
func TestLabelsNameOnce(t *testing.T) {
	named := map[uint64]int{}
	l := &Labels{
		OwnNetNS:  1,
		NetNSName: func(inode uint32) string { named[uint64(inode)]++; return "ns" },
		Cgroup: func(id uint64) (proc.Cgroup, bool) {
			named[id]++
			return proc.Cgroup{Path: "/a", ID: id}, id != 300
		},
	}
	// Lines at 0, 1, ..., 9 s: 300 is asked about again while its first
	// line is at most cgroupRetryNs old (text and JSON at 0, 1, 2 and
	// 3 s), then never.
	for sec := range 10 {
		for _, r := range []tracer.Record{
			{NetNS: 1, Process: tracer.Process{CgroupID: 100}},
			{NetNS: 2, Process: tracer.Process{CgroupID: 200}},
			{NetNS: 0, Process: tracer.Process{CgroupID: 300}},
			{NetNS: 2, Process: tracer.Process{CgroupID: 0}},
		} {
			r.TimeNs = int64(sec) * 1e9
			textLine(&r, false, l)
			AppendJSON(nil, &r, l)
		}
	}
	want := map[uint64]int{2: 1, 100: 1, 200: 1, 300: 8}
	if len(named) != len(want) {
		t.Fatalf("named %v, want %v", named, want)
	}
	for k, n := range want {
		if named[k] != n {
			t.Errorf("named %v, want %v", named, want)
		}
	}
}

// TestLabelsBounded: what labels add to a line stays within the room the
// Printer keeps for one.
// TestLabelsCgroupCreatedLate: a cgroup the index has not found yet at
// its first line is named when it is found.
func TestLabelsCgroupCreatedLate(t *testing.T) {
	indexed := false
	l := &Labels{Cgroup: func(id uint64) (proc.Cgroup, bool) {
		return proc.ParseCgroupPath("/system.slice/docker-" + strings.Repeat("ab", 32) + ".scope"), indexed
	}}
	r := tracer.Record{TimeNs: 1e9, Process: tracer.Process{CgroupID: 77}}
	if line := textLine(&r, false, l); strings.Contains(string(line), "docker") {
		t.Fatalf("named before it was found: %s", line)
	}
	indexed = true
	r.TimeNs += 5e8
	if line := textLine(&r, false, l); !strings.Contains(string(line), "[docker abababababab]") {
		t.Errorf("not named once found: %s", line)
	}
}

func TestLabelsBounded(t *testing.T) {
	long := strings.Repeat("\x1b", 4000)
	l := &Labels{
		OwnNetNS:  1,
		NetNSName: func(uint32) string { return long },
		Cgroup: func(id uint64) (proc.Cgroup, bool) {
			return proc.Cgroup{Path: "/" + long, ID: id, Container: &proc.Container{ID: strings.Repeat("a", 64), PodUID: long}}, true
		},
	}
	r := sampleRecords()[9] // the one with the most escapes
	r.NetNS = 2
	for _, line := range [][]byte{textLine(&r, true, l), AppendJSON(nil, &r, l)} {
		if len(line) > lineMaxSize {
			t.Errorf("a line of %d bytes, more than %d: %.200s…", len(line), lineMaxSize, line)
		}
	}
	if text := textLine(&r, false, l); !strings.Contains(string(text), `[\x1b\x1b`) {
		t.Errorf("the namespace's label, cut, is missing: %.300s", text)
	}
	if json := AppendJSON(nil, &r, l); strings.Contains(string(json), `"cgroup":`) {
		t.Errorf("a cgroup path too long for a line is printed: %.300s", json)
	}
}

// textLine is r's text line, after a header, with labels l.
func textLine(r *tracer.Record, color bool, l *Labels) []byte {
	text := Text{Location: time.UTC, Color: color, Labels: l}
	text.AppendHeader(nil)
	return text.AppendRecord(nil, r)
}
