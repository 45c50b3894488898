package proc

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// TestResolveSelfAndChild resolves this test and a child it starts, then
// names the child after it exits.
func TestResolveSelfAndChild(t *testing.T) {
	before := time.Now()
	c := startChild(t, "sleep", "sleep", "1000")
	after := time.Now()
	r := NewResolver()

	self, err := r.Resolve(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	wantName := filepath.Base(os.Args[0])
	wantName = wantName[:min(len(wantName), 15)] // TASK_COMM_LEN less its NUL
	exe, _ := os.Executable()
	me, _ := user.Current()
	if self.Name != wantName || self.PPID != uint32(os.Getppid()) || self.Exe != exe ||
		self.UID != uint32(os.Getuid()) || self.User != me.Username || self.RSSBytes == 0 {
		t.Errorf("this test resolved as %+v; want name %q, ppid %d, exe %q, user %s", self, wantName, os.Getppid(), exe, me.Username)
	}
	if len(self.Ancestors) == 0 || self.Ancestors[0].PID != self.PPID {
		t.Fatalf("ancestors %v, want the parent %d first", self.Ancestors, self.PPID)
	}
	top := self.Ancestors[len(self.Ancestors)-1]
	if st, err := readStatus(top.PID); err != nil || !st.namespaceInit || top.Name == "" {
		t.Errorf("the chain %v ends at %+v, not at a named init (%+v, %v)", self.Ancestors, top, st, err)
	}

	p, err := r.Resolve(c.id.PID)
	if err != nil {
		t.Fatal(err)
	}
	sleepPath, _ := exec.LookPath("sleep")
	sleepExe, _ := filepath.EvalSymlinks(sleepPath)
	if p.Identity != c.id || p.Name != "sleep" || p.PPID != self.PID || p.Exe != sleepExe || p.Cmdline != "sleep 1000" || p.User != me.Username {
		t.Errorf("the child resolved as %+v; want sleep %s, child of %d", p, sleepExe, self.PID)
	}
	if want := append([]Ancestor{{self.PID, self.Name}}, self.Ancestors...); !slices.Equal(p.Ancestors, want) {
		t.Errorf("the child's ancestors %v, want %v", p.Ancestors, want)
	}
	// /proc's start time is rounded down to a tick; the wall clock and the
	// boot clock are read apart: a second either side is rounding, not
	// timing.
	if p.StartTime.Before(before.Add(-time.Second)) || p.StartTime.After(after.Add(time.Second)) || p.Age(time.Now()) < 0 {
		t.Errorf("the child started at %v (age %v), not between %v and %v", p.StartTime, p.Age(time.Now()), before, after)
	}
	if p.Path != self.Path || p.ID != self.ID || (r.cgroups.root != "" && p.ID == 0) {
		t.Errorf("the child's cgroup %q (%d), want its parent's %q (%d)", p.Path, p.ID, self.Path, self.ID)
	}

	again, err := r.Resolve(c.id.PID)
	if err != nil || len(r.procs) != 2 || again.StartTime != p.StartTime || !slices.Equal(again.Ancestors, p.Ancestors) {
		t.Errorf("resolved again: %+v, %v, with %d cached; want what the first one found", again, err, len(r.procs))
	}

	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	json.Unmarshal(b, &fields)
	for _, f := range []string{"pid", "start_ns", "name", "ppid", "ancestors", "uid", "user", "rss_bytes", "start_time", "exe", "cmdline"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("no %q in %s", f, b)
		}
	}

	c.Process.Kill()
	c.Wait()
	if _, err := r.Resolve(c.id.PID); !errors.Is(err, ErrExited) {
		t.Errorf("Resolve after the exit: %v, want ErrExited", err)
	}
	gone, err := r.Lookup(c.id)
	if err != nil || !gone.Exited || gone.Name != "sleep" || gone.Cmdline != "sleep 1000" {
		t.Errorf("Lookup after the exit: %+v, %v; want the sleep it was, exited", gone, err)
	}
	if _, err := NewResolver().Lookup(c.id); !errors.Is(err, ErrExited) {
		t.Errorf("Lookup of a process never seen: %v, want ErrExited", err)
	}
}

func readStatus(pid uint32) (status, error) {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	if err != nil {
		return status{}, err
	}
	return parseStatus(b)
}

// TestResolveReparented: when a process's parent exits, the next Resolve
// names its new parent.
func TestResolveReparented(t *testing.T) {
	sh := exec.Command("sh", "-c", "sleep 1000 & echo $!; read x")
	stdin, _ := sh.StdinPipe()
	stdout, _ := sh.StdoutPipe()
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer sh.Wait()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid64, err := strconv.ParseUint(strings.TrimSpace(line), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	pid := uint32(pid64)
	waitFor(t, "sleep to start", func() bool { st, err := readStat(pid); return err == nil && st.comm == "sleep" })
	id, _ := Identify(pid)
	defer Stop(t.Context(), id, 0)

	r := NewResolver()
	p, err := r.Resolve(pid)
	if err != nil || p.PPID != uint32(sh.Process.Pid) || p.Ancestors[0].Name != "sh" {
		t.Fatalf("resolved %+v, %v; want a child of sh %d", p, err, sh.Process.Pid)
	}
	stdin.Close() // sh reads EOF and exits; sleep goes to a reaper
	sh.Wait()
	waitFor(t, "sleep to be handed to a reaper", func() bool { st, _ := readStat(pid); return st.ppid != p.PPID })
	q, err := r.Resolve(pid)
	st, _ := readStat(pid)
	if err != nil || q.PPID != st.ppid || len(q.Ancestors) == 0 || q.Ancestors[0].PID != st.ppid {
		t.Errorf("after the parent exited: %+v, %v; want parent %d", q, err, st.ppid)
	}
}

// TestResolveAfterExec: a process that execs keeps its pid and start
// time; the next Resolve describes the program it runs now, not the
// script it was (an entry point's `exec "$@"`).
func TestResolveAfterExec(t *testing.T) {
	sh := exec.Command("sh", "-c", "read x; exec sleep 1000")
	stdin, _ := sh.StdinPipe()
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
	pid := uint32(sh.Process.Pid)
	waitUntilRuns(t, pid, "sh")
	r := NewResolver()
	before, err := r.Resolve(pid)
	if err != nil || !strings.HasPrefix(before.Cmdline, "sh -c") {
		t.Fatalf("before the exec: %+v, %v; want sh", before, err)
	}
	io.WriteString(stdin, "go\n")
	waitUntilRuns(t, pid, "sleep")
	after, err := r.Resolve(pid)
	sleepPath, _ := exec.LookPath("sleep")
	sleepExe, _ := filepath.EvalSymlinks(sleepPath)
	if err != nil || after.Identity != before.Identity || after.Name != "sleep" || after.Exe != sleepExe || after.Cmdline != "sleep 1000" {
		t.Errorf("after the exec: %+v, %v; want the same process as sleep 1000, %s", after, err, sleepExe)
	}
}

// TestEvict: a full cache forgets the processes that exited first, then
// the least recently used.
func TestEvict(t *testing.T) {
	r := NewResolver()
	r.limit = 4
	var kids []*child
	for range 7 {
		kids = append(kids, startChild(t, "sleep", "sleep", "1000"))
	}
	resolve := func(c *child) {
		t.Helper()
		if _, err := r.Resolve(c.id.PID); err != nil {
			t.Fatal(err)
		}
	}
	cached := func() []uint32 {
		var pids []uint32
		for id := range r.procs {
			pids = append(pids, id.PID)
		}
		slices.Sort(pids)
		return pids
	}
	pids := func(cs ...*child) []uint32 {
		var out []uint32
		for _, c := range cs {
			out = append(out, c.id.PID)
		}
		slices.Sort(out)
		return out
	}
	for _, c := range kids[:4] {
		resolve(c)
	}
	for _, c := range kids[:2] {
		c.Process.Kill()
		c.Wait()
	}
	resolve(kids[4])
	if got, want := cached(), pids(kids[2], kids[3], kids[4]); !slices.Equal(got, want) {
		t.Errorf("after two exits: cached %v, want %v", got, want)
	}
	resolve(kids[5])
	resolve(kids[2]) // kids[3] is now the least recently used
	resolve(kids[6])
	if got, want := cached(), pids(kids[2], kids[4], kids[5], kids[6]); !slices.Equal(got, want) {
		t.Errorf("with none exited: cached %v, want %v", got, want)
	}
}

// TestResolveInCgroup puts a child in a cgroup of its own and finds it by
// path and by id.
func TestResolveInCgroup(t *testing.T) {
	needRoot(t)
	dir, c := childInNewCgroup(t, "sleep", "sleep", "1000")
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	r := NewResolver()
	p, err := r.Resolve(c.id.PID)
	if err != nil {
		t.Fatal(err)
	}
	want := "/" + filepath.Base(dir)
	if p.Path != want || p.ID != st.Ino || p.Unit != "" || p.Container != nil {
		t.Errorf("resolved the child in cgroup %q (id %d, unit %q, container %+v); want %q, id %d", p.Path, p.ID, p.Unit, p.Container, want, st.Ino)
	}
	// A fresh Resolver knows the id only by walking the mount.
	if cg, ok := NewResolver().CgroupByID(st.Ino); !ok || cg.Path != want || cg.ID != st.Ino {
		t.Errorf("CgroupByID(%d) = %+v, %v; want %q", st.Ino, cg, ok, want)
	}
	if cg, ok := NewResolver().CgroupByID(1<<63 + 12345); ok {
		t.Errorf("an id no cgroup has names %+v", cg)
	}
}

// childInNewCgroup starts a command in a new cgroup under the cgroup2
// mount, removed when the test ends.
func childInNewCgroup(t *testing.T, comm, name string, args ...string) (string, *child) {
	t.Helper()
	root := NewResolver().cgroups.root
	if root == "" {
		t.Fatal("no cgroup2 mount in /proc/self/mountinfo")
	}
	dir, err := os.MkdirTemp(root, "porttrace-test-")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the child is reaped before this runs.
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Error(err)
		}
	})
	c := startChild(t, comm, name, args...)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(itoa(c.id.PID)), 0); err != nil {
		t.Fatal(err)
	}
	return dir, c
}

// TestCgroupIDIsBPFs: the id the Resolver gives a process's cgroup is the
// one eBPF's bpf_get_current_cgroup_id returns in that process.
func TestCgroupIDIsBPFs(t *testing.T) {
	needRoot(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	cat := exec.Command("cat")
	stdin, _ := cat.StdinPipe()
	cat.Stdout = io.Discard
	dir, err := os.MkdirTemp(NewResolver().cgroups.root, "porttrace-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	defer cat.Wait()
	defer stdin.Close()
	pid := uint32(cat.Process.Pid)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}

	seen, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer seen.Close()
	// On every system call's entry in cat, keep bpf_get_current_cgroup_id().
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.RawTracepoint,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.FnGetCurrentPidTgid.Call(),
			asm.RSh.Imm(asm.R0, 32),
			asm.JNE.Imm(asm.R0, int32(pid), "exit"),
			asm.FnGetCurrentCgroupId.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.StoreImm(asm.RFP, -12, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, seen.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -12),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: prog})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	var fromBPF uint64
	waitFor(t, "cat to make a system call", func() bool {
		fmt.Fprintln(stdin, "x") // cat reads it and writes it out
		return seen.Lookup(uint32(0), &fromBPF) == nil && fromBPF != 0
	})
	p, err := NewResolver().Resolve(pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != fromBPF {
		t.Errorf("cgroup %q: the Resolver says id %d, bpf_get_current_cgroup_id %d", p.Path, p.ID, fromBPF)
	}
}

// TestResolveConcurrently: callers share one Resolver (run with -race).
func TestResolveConcurrently(t *testing.T) {
	r := NewResolver()
	r.limit = 2 // every few stores evict
	kids := []*child{startChild(t, "sleep", "sleep", "1000"), startChild(t, "sleep", "sleep", "1000")}
	pids := []uint32{uint32(os.Getpid()), kids[0].id.PID, kids[1].id.PID}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := range 50 {
				pid := pids[(g+i)%len(pids)]
				var p Process
				if p, err = r.Resolve(pid); err != nil {
					break
				}
				if p.PID != pid || (p.ID != 0 && !okCgroup(r, p)) {
					err = fmt.Errorf("resolved %d as %+v", pid, p)
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func okCgroup(r *Resolver, p Process) bool {
	c, ok := r.CgroupByID(p.ID)
	return ok && c.Path == p.Path
}
