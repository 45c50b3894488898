package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
	"github.com/porttrace/porttrace/tracer/proc"
)

func TestHeldSocketDecoderMatchesCLayout(t *testing.T) {
	var h bpf.OwnersHeldSocket
	if got := int(unsafe.Sizeof(h)); got != heldSocketSize {
		t.Fatalf("struct held_socket is %d bytes, decoder expects %d", got, heldSocketSize)
	}
	checkOffsets(t, reflect.TypeOf(h), map[string]uintptr{
		"StartNs": offHeldStart, "Inode": offHeldInode, "Pid": offHeldPID, "Fd": offHeldFD,
	})
	h = bpf.OwnersHeldSocket{StartNs: 5_000_000_000, Inode: 77, Pid: 43, Fd: 7}
	var buf bytes.Buffer
	binary.Write(&buf, binary.NativeEndian, &h)
	got, err := decodeHeldSockets(buf.Bytes())
	want := []heldSocket{{Holding: Holding{Process: proc.Identity{PID: 43, StartNs: 5_000_000_000}, FD: 7}, inode: 77}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("decoded %+v, %v; want %+v", got, err, want)
	}
	if _, err := decodeHeldSockets(buf.Bytes()[1:]); !errors.Is(err, errHeldSocketLength) {
		t.Errorf("a short record: %v, want errHeldSocketLength", err)
	}
	h = bpf.OwnersHeldSocket{Pid: 43, Fd: -1}
	buf.Reset()
	binary.Write(&buf, binary.NativeEndian, &h)
	if _, err := decodeHeldSockets(buf.Bytes()); !errors.Is(err, ErrTooManySharers) {
		t.Errorf("a process with too many descriptors: %v, want ErrTooManySharers", err)
	}
}

// TestKernelSharers: a listener passed on to a child and, through a shell,
// to a grandchild is found in their descriptor tables, with this process,
// its owner; a child that did not inherit it, and a socket no descendant
// holds, are not; once this process closes its own, the descendants
// alone hold it; an owner with more descriptor slots than the iterator
// reads makes the search decline.
func TestKernelSharers(t *testing.T) {
	needPrivileges(t)
	s, err := LoadSharers()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	shared, sharedFile := listenerFile(t)
	_, alone := listenerFile(t)
	start := func(file *os.File, name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		if file != nil {
			cmd.ExtraFiles = []*os.File{file}
		}
		// A group of its own, killed whole: the shell's sleep too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		return cmd
	}
	child := start(sharedFile, "sleep", "60")
	shell := start(sharedFile, "sh", "-c", "sleep 60 & wait")
	start(nil, "sleep", "60")

	self := uint32(os.Getpid())
	sharedInode, aloneInode := inodeOf(t, sharedFile), inodeOf(t, alone)
	owner, err := proc.Identify(self)
	if err != nil {
		t.Fatal(err)
	}
	owned := map[proc.Identity][]uint64{owner: {sharedInode, aloneInode}}
	holders := func() []uint32 {
		found, err := s.Find(owned)
		if err != nil {
			t.Fatal(err)
		}
		if h, ok := found[aloneInode]; ok {
			t.Errorf("a socket no descendant holds is found held by %v", h)
		}
		var pids []uint32
		for _, h := range found[sharedInode] {
			if h.FD < 0 {
				t.Errorf("descriptor %d", h.FD)
			}
			pids = append(pids, h.Process.PID)
		}
		if !slices.IsSorted(pids) {
			t.Errorf("holders %v: not in pid order", pids)
		}
		return pids
	}
	// The shell forks its sleep a moment after it starts.
	var got []uint32
	for deadline := time.Now().Add(5 * time.Second); len(got) < 4 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got = holders()
	}
	if len(got) != 4 || !slices.Contains(got, self) || !slices.Contains(got, uint32(child.Process.Pid)) || !slices.Contains(got, uint32(shell.Process.Pid)) {
		t.Fatalf("holders %v: want this process (%d), the child %d, the shell %d and its sleep", got, self, child.Process.Pid, shell.Process.Pid)
	}

	shared.Close()
	sharedFile.Close()
	if got := holders(); len(got) != 3 || slices.Contains(got, self) {
		t.Errorf("holders once this process closed its descriptors: %v, want the three descendants", got)
	}

	// This process's table grows past MAX_FD_SLOTS (2048) for a
	// descriptor numbered 4100, and never shrinks: the owner's own
	// descriptors, read once a descendant shares its socket, are too
	// many.
	lim := unix.Rlimit{Cur: 8192, Max: 8192}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup3(int(alone.Fd()), 4100, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(4100)
	if _, err := s.Find(owned); !errors.Is(err, ErrTooManySharers) {
		t.Errorf("an owner with descriptor 4100: %v, want ErrTooManySharers", err)
	}
}

// listenerFile listens on loopback and returns the listener and a
// descriptor of its own for the same socket.
func listenerFile(t *testing.T) (net.Listener, *os.File) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); f.Close() })
	return l, f
}

// inodeOf is the inode of f's socket.
func inodeOf(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// BenchmarkSharersFind: the daemon's who pays this for a port whose owners
// forked no holder: one pass of the descendants iterator over the tasks.
func BenchmarkSharersFind(b *testing.B) {
	if err := checkPrivileges(); err != nil {
		b.Skip(err)
	}
	s, err := LoadSharers()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	owner, err := proc.Identify(uint32(os.Getpid()))
	if err != nil {
		b.Fatal(err)
	}
	owned := map[proc.Identity][]uint64{owner: {1}}
	for b.Loop() {
		if _, err := s.Find(owned); err != nil {
			b.Fatal(err)
		}
	}
}
