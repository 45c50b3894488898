package proc

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	// A name with spaces and parentheses, as a process may choose.
	const tricky = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 119495 3133440 382 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
	st, err := parseStat([]byte(tricky))
	if err != nil {
		t.Fatal(err)
	}
	if want := (stat{comm: "a) b (c)", state: 'S', ppid: 1, startTicks: 119495, rssPages: 382}); st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	if st.startNs() != 1194950000000 {
		t.Errorf("start %d ns, want 1194950000000", st.startNs())
	}
	kthread := "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	if st, err := parseStat([]byte(kthread)); err != nil || st.ppid != 0 || st.comm != "kthreadd" {
		t.Errorf("kthreadd: %+v, %v", st, err)
	}
	for _, bad := range []string{
		"", "4242", "4242 (x", "4242 x) S 1", "4242 (x) S 1 2 3",
		"4242 (x) S one 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 119495 3133440 382",
		"4242 (x) SS 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 119495 3133440 382",
	} {
		if _, err := parseStat([]byte(bad)); !errors.Is(err, errBadStat) {
			t.Errorf("parseStat(%q): %v, want errBadStat", bad, err)
		}
	}
}

// FuzzParseStat: a process names itself, and its name is in its stat.
func FuzzParseStat(f *testing.F) {
	f.Add("x")
	f.Add(") S 1 2")
	f.Add("a) (b")
	f.Fuzz(func(t *testing.T, comm string) {
		line := "4242 (" + comm + ") S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 119495 3133440 382 0 0"
		st, err := parseStat([]byte(line))
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if st.comm != comm || st.ppid != 1 || st.startTicks != 119495 || st.rssPages != 382 {
			t.Fatalf("%q: %+v", line, st)
		}
	})
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     status
		ok       bool
	}{
		{"the machine's init", "Name:\tinit\nUid:\t0\t0\t0\t0\nNSpid:\t1\n", status{uid: 0, namespaceInit: true}, true},
		{"a user's process", "Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\nNSpid:\t4242\n", status{uid: 1000}, true},
		{"a container's init", "Uid:\t0\t0\t0\t0\nNSpid:\t4242\t1\n", status{namespaceInit: true}, true},
		{"a container's process", "Uid:\t100000\t0\t0\t0\nNSpid:\t4243\t7\n", status{uid: 100000}, true},
		{"a kernel without NSpid", "Uid:\t0\t0\t0\t0\n", status{}, true},
		{"no uid", "Name:\tx\nNSpid:\t1\n", status{}, false},
		{"a bad uid", "Uid:\tme\t0\t0\t0\n", status{}, false},
	} {
		got, err := parseStatus([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, in  string
		v2, unit  string
		container string
	}{
		{"pure v2", "0::/system.slice/nginx.service\n", "/system.slice/nginx.service", "nginx.service", ""},
		{"this machine: hybrid, names nothing",
			"9:name=systemd:/\n4:memory:/process_api/876bd19d67c0b66dfeeb1eb91474f30d\n1:cpu:/\n0::/\n", "/", "", ""},
		{"hybrid, docker in both", "4:memory:/docker/" + id1 + "\n0::/docker/" + id1 + "\n", "/docker/" + id1, "", id1},
		{"hybrid, docker only in v1", "12:pids:/docker/" + id1 + "\n1:name=systemd:/docker/" + id1 + "\n0::/\n", "/", "", id1},
		{"hybrid, a unit only in name=systemd", "3:cpu:/\n1:name=systemd:/system.slice/sshd.service\n0::/\n", "/", "sshd.service", ""},
		{"v2 wins", "1:name=systemd:/system.slice/old.service\n0::/system.slice/new.service\n", "/system.slice/new.service", "new.service", ""},
		{"v1 only", "2:cpu,cpuacct:/docker/" + id2 + "\n", "", "", id2},
		{"empty", "", "", "", ""},
		{"garbage", "x\n::\n:\n", "", "", ""},
	} {
		v2, c := parseProcCgroup([]byte(tc.in))
		got := ""
		if c.Container != nil {
			got = c.Container.ID
		}
		if v2 != tc.v2 || c.Path != tc.v2 || c.Unit != tc.unit || got != tc.container {
			t.Errorf("%s: v2 %q, %+v (container %q); want %q, unit %q, container %q", tc.name, v2, c, got, tc.v2, tc.unit, tc.container)
		}
	}
}

func TestCgroup2Mount(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"hybrid", "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified"},
		{"unified", "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup"},
		{"an escaped space", "35 24 0:30 / /mnt/my\\040cgroups rw - cgroup2 none rw\n", "/mnt/my cgroups"},
		{"only part of it", "35 24 0:30 /docker/x /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n", ""},
		{"v1 only", "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", ""},
		{"none", "", ""},
	} {
		if got := cgroup2Mount([]byte(tc.in)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParsePIDs(t *testing.T) {
	if got := parsePIDs("12 345 6789 \n"); !slices.Equal(got, []uint32{12, 345, 6789}) {
		t.Errorf("got %v", got)
	}
	if got := parsePIDs(""); got != nil {
		t.Errorf("got %v from nothing", got)
	}
}

// TestClockTicks: the unit of /proc's start times is what userHZ says,
// on the machine that runs the test.
func TestClockTicks(t *testing.T) {
	auxv, err := unix.Auxv()
	if err != nil {
		t.Fatal(err)
	}
	const atClkTck = 17 // AT_CLKTCK, <linux/auxvec.h>
	for _, kv := range auxv {
		if kv[0] == atClkTck {
			if kv[1] != userHZ {
				t.Fatalf("AT_CLKTCK is %d, userHZ %d", kv[1], userHZ)
			}
			return
		}
	}
	t.Fatal("no AT_CLKTCK in the auxiliary vector")
}

func TestSame(t *testing.T) {
	exact := Identity{PID: 42, StartNs: 1_194_957_654_321} // from the kernel
	rounded := Identity{PID: 42, StartNs: 1_194_950_000_000}
	if !exact.Same(rounded) || !rounded.Same(exact) {
		t.Error("an exact start time does not match /proc's rounded one")
	}
	if exact.Same(Identity{PID: 42, StartNs: 1_194_960_000_000}) {
		t.Error("a process started a tick later is the same")
	}
	if exact.Same(Identity{PID: 43, StartNs: exact.StartNs}) {
		t.Error("another pid is the same")
	}
}

func TestCmdlineText(t *testing.T) {
	p := Process{Cmdline: "java -cp /a\x1b[2J -Dx=日本"}
	for _, tc := range []struct {
		max  int
		want string
	}{
		{100, `java -cp /a\x1b[2J -Dx=日本`},
		{11, `java -cp /a…`},
		{12, `java -cp /a\x1b…`},
		{21, `java -cp /a\x1b[2J -Dx=日…`},
		{22, `java -cp /a\x1b[2J -Dx=日本`},
		{0, "…"},
	} {
		if got := p.CmdlineText(tc.max); got != tc.want {
			t.Errorf("CmdlineText(%d) = %q, want %q", tc.max, got, tc.want)
		}
	}
	if got := (&Process{}).CmdlineText(10); got != "" {
		t.Errorf("empty: %q", got)
	}
}
