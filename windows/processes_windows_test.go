package windows

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDescribe: a child of this test is named with its image, parents,
// start, memory and user.
func TestDescribe(t *testing.T) {
	before := time.Now().Add(-time.Second) // creation times have 100 ns steps, clocks less
	child, _ := startRole(t, "sleep", false)
	pid := uint32(child.Process.Pid)
	ps, err := readProcesses()
	if err != nil {
		t.Fatal(err)
	}
	p := ps.describe(pid)
	t.Logf("%+v", p)
	exe, _ := os.Executable()
	if !strings.EqualFold(p.Name, filepath.Base(exe)) || !strings.EqualFold(filepath.Base(p.Exe), filepath.Base(exe)) {
		t.Errorf("name %q, exe %q; want the image %q", p.Name, p.Exe, exe)
	}
	if p.PPID != uint32(os.Getpid()) || len(p.Ancestors) == 0 || p.Ancestors[0].PID != uint32(os.Getpid()) {
		t.Errorf("ppid %d, ancestors %v; want this test, %d, first", p.PPID, p.Ancestors, os.Getpid())
	}
	if p.StartTime.Before(before) || p.StartTime.After(time.Now()) || p.StartNs != uint64(p.StartTime.UnixNano()) {
		t.Errorf("started %v (%d ns), want after %v", p.StartTime, p.StartNs, before)
	}
	if id, err := Identify(pid); err != nil || !id.Same(p.Identity) {
		t.Errorf("Identify(%d) = %v, %v; want %v", pid, id, err, p.Identity)
	}
	if p.RSSBytes == 0 || p.User == "" || p.Exited {
		t.Errorf("rss %d, user %q, exited %v: want memory, a user, running", p.RSSBytes, p.User, p.Exited)
	}
	if gone := ps.describe(0xfffffffd); !gone.Exited {
		t.Errorf("a pid no process has: %+v, want exited", gone)
	}
}

// TestServices: the service control manager names what the running
// services' processes run.
func TestServices(t *testing.T) {
	services, err := servicesByPID()
	if err != nil {
		t.Fatal(err)
	}
	if len(services) == 0 {
		t.Fatal("no running service has a process")
	}
	ps, err := readProcesses()
	if err != nil {
		t.Fatal(err)
	}
	for pid, names := range services {
		p := ps.describe(pid)
		if !slices.Equal(p.Services, names) {
			t.Errorf("pid %d runs %v, described with %v", pid, names, p.Services)
		}
		if what, stop := p.Manager(); !strings.HasPrefix(what, "Windows service") || !strings.Contains(stop, "sc stop "+names[0]) {
			t.Errorf("pid %d (%v): manager %q, %q", pid, names, what, stop)
		}
	}
}
