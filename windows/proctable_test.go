package windows

import (
	"slices"
	"testing"

	"github.com/porttrace/porttrace/tracer/proc"
)

// A table as a Windows host shows it: services.exe's tree, a server that
// started a worker, a process whose creator exited and whose pid went to
// a newer process, a child that cannot be opened.
var testTable = procTable{
	4:    {pid: 4, ppid: 0, name: "System"},
	600:  {pid: 600, ppid: 500, name: "wininit.exe", startNs: 100}, // 500 (smss) exited
	700:  {pid: 700, ppid: 600, name: "services.exe", startNs: 110},
	900:  {pid: 900, ppid: 700, name: "svchost.exe", startNs: 200},
	1000: {pid: 1000, ppid: 900, name: "server.exe", startNs: 300},
	1100: {pid: 1100, ppid: 1000, name: "worker.exe", startNs: 400},
	1200: {pid: 1200, ppid: 1100, name: "helper.exe", startNs: 500},
	1300: {pid: 1300, ppid: 1000, name: "protected.exe"},
	1400: {pid: 1400, ppid: 1300, name: "below-protected.exe", startNs: 600},
	// 2000's creator had pid 1500, which exited; 1500 now names a process
	// created after 2000.
	1500: {pid: 1500, ppid: 1000, name: "newcomer.exe", startNs: 900},
	2000: {pid: 2000, ppid: 1500, name: "orphan.exe", startNs: 800},
	// Loops Windows may show when pids were reused with unknown times.
	3000: {pid: 3000, ppid: 3100, name: "a.exe"},
	3100: {pid: 3100, ppid: 3000, name: "b.exe"},
}

func anc(pid uint32, name string) proc.Ancestor { return proc.Ancestor{PID: pid, Name: name} }

func TestAncestors(t *testing.T) {
	for _, tc := range []struct {
		pid  uint32
		want []proc.Ancestor
	}{
		{1200, []proc.Ancestor{anc(1100, "worker.exe"), anc(1000, "server.exe"), anc(900, "svchost.exe"), anc(700, "services.exe"), anc(600, "wininit.exe")}},
		{600, nil},  // its creator exited
		{4, nil},    // the Idle process parents nothing
		{2000, nil}, // 1500 started after it: not its parent
		{1400, []proc.Ancestor{anc(1300, "protected.exe"), anc(1000, "server.exe"), anc(900, "svchost.exe"), anc(700, "services.exe"), anc(600, "wininit.exe")}},
		{3000, []proc.Ancestor{anc(3100, "b.exe")}},
		{9999, nil},
	} {
		if got := testTable.ancestors(tc.pid); !slices.Equal(got, tc.want) {
			t.Errorf("ancestors(%d) = %v, want %v", tc.pid, got, tc.want)
		}
	}
}

func TestDescendants(t *testing.T) {
	ids, unknown := testTable.descendants(proc.Identity{PID: 1000, StartNs: 300})
	// Parents before their children; 1500 is a child (created after
	// 1000), 2000 is not 1500's; 1300 cannot be told from a newcomer.
	want := []proc.Identity{{PID: 1100, StartNs: 400}, {PID: 1200, StartNs: 500}, {PID: 1500, StartNs: 900}}
	if !slices.Equal(ids, want) {
		t.Errorf("descendants = %v, want %v", ids, want)
	}
	if !slices.Equal(unknown, []uint32{1300}) {
		t.Errorf("unknown = %v, want [1300]", unknown)
	}
	// A root created after the process that names its pid as creator
	// has no such child.
	if ids, _ := testTable.descendants(proc.Identity{PID: 1100, StartNs: 550}); len(ids) != 0 {
		t.Errorf("children created before their parent: %v", ids)
	}
	if ids, unknown := testTable.descendants(proc.Identity{PID: 3000}); len(ids) != 0 || !slices.Equal(unknown, []uint32{3100}) {
		t.Errorf("loop: ids %v unknown %v", ids, unknown)
	}
}
