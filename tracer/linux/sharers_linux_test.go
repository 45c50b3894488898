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
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
)

func TestSockRefsDecoderMatchesCLayout(t *testing.T) {
	var r bpf.OwnersSockRefs
	if got := int(unsafe.Sizeof(r)); got != sockRefsSize {
		t.Fatalf("struct sock_refs is %d bytes, decoder expects %d", got, sockRefsSize)
	}
	checkOffsets(t, reflect.TypeOf(r), map[string]uintptr{"Sock": offRefsSock, "Refs": offRefsCount, "Inode": offRefsInode})
	r = bpf.OwnersSockRefs{Sock: 0xffff8881, Refs: 3, Inode: 77}
	var buf bytes.Buffer
	binary.Write(&buf, binary.NativeEndian, &r)
	if got, err := decodeSockRefs(buf.Bytes()); err != nil || got[0xffff8881] != (sockRefs{count: 3, inode: 77}) || len(got) != 1 {
		t.Errorf("decoded %v, %v; want 3 references to 0xffff8881, inode 77", got, err)
	}
	if _, err := decodeSockRefs(buf.Bytes()[1:]); !errors.Is(err, errSockRefsLength) {
		t.Errorf("a short record: %v, want errSockRefsLength", err)
	}
}

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
	if _, err := decodeHeldSockets(buf.Bytes()); !errors.Is(err, ErrSearchIncomplete) {
		t.Errorf("a process with too many descriptors: %v, want ErrSearchIncomplete", err)
	}
}

// TestKernelSharers: a listener passed on to a child and, through a shell,
// to a grandchild is found in their descriptor tables, with this process,
// its owner; a child that did not inherit it, and a socket no descendant
// holds, are not; the listener's file counts a reference for each
// descriptor; a socket with one descriptor is its owner's, or a child's
// once the owner closed its copy, or the search's decline where neither
// holds it; once this process closes its own, the descendants alone hold
// the shared one; an owner with more descriptor slots than the iterator
// reads makes the search decline.
func TestKernelSharers(t *testing.T) {
	needPrivileges(t)
	s, err := LoadSharers()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	shared, sharedFile := listenerFile(t)
	alone, aloneFile := listenerFile(t)
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
	sharedSock, aloneSock := ownedSocket(t, shared), ownedSocket(t, alone)
	sharedInode, aloneInode := sharedSock.Inode, aloneSock.Inode
	owner, err := proc.Identify(self)
	if err != nil {
		t.Fatal(err)
	}
	owned := map[proc.Identity][]OwnedSocket{owner: {sharedSock, aloneSock}}
	holders := func() []uint32 {
		found, err := s.Find(owned)
		if err != nil {
			t.Fatal(err)
		}
		// Its owner's table is read for the shared one, and lists it.
		if h := found[aloneInode]; len(h) > 1 || len(h) == 1 && h[0].Process.PID != self {
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
	// Its file counts a reference for each descriptor: this process's two
	// (the listener's and the one passed on), the child's, the shell's,
	// its sleep's; a listener no other descriptor names has one.
	single, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	singleSock := ownedSocket(t, single)
	if refs, err := s.refs([]uint64{sharedSock.Sock, singleSock.Sock}); err != nil ||
		refs[sharedSock.Sock] != (sockRefs{count: 5, inode: sharedInode}) || refs[singleSock.Sock] != (sockRefs{count: 1, inode: singleSock.Inode}) {
		t.Errorf("references: %v, %v; want 5 to the shared listener, 1 to the single one, with their inodes", refs, err)
	}
	if len(got) != 4 || !slices.Contains(got, self) || !slices.Contains(got, uint32(child.Process.Pid)) || !slices.Contains(got, uint32(shell.Process.Pid)) {
		t.Fatalf("holders %v: want this process (%d), the child %d, the shell %d and its sleep", got, self, child.Process.Pid, shell.Process.Pid)
	}

	// A socket with one descriptor: this process's own, then (as a master
	// that accepts, forks and closes its copy) a child's alone, then a
	// process's that is no longer a descendant (a shell that left its
	// sleep to init): the search cannot say whose.
	oneHolder := func(cmd ...string) (OwnedSocket, *exec.Cmd) {
		l, f := listenerFile(t)
		sock := ownedSocket(t, l)
		holder := start(f, cmd[0], cmd[1:]...)
		l.Close()
		f.Close()
		return sock, holder
	}
	mine, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	mineSock := ownedSocket(t, mine)
	mineFD := descriptorOf(t, mine)
	if found, err := s.Find(map[proc.Identity][]OwnedSocket{owner: {mineSock}}); err != nil ||
		len(found[mineSock.Inode]) != 1 || found[mineSock.Inode][0].Process.PID != self || found[mineSock.Inode][0].FD != mineFD || len(found) != 1 {
		t.Errorf("a listener only its owner holds: %v, %v; want this process's descriptor %d alone", found, err, mineFD)
	}
	handed, handedTo := oneHolder("sleep", "60")
	if found, err := s.Find(map[proc.Identity][]OwnedSocket{owner: {handed}}); err != nil ||
		len(found[handed.Inode]) != 1 || found[handed.Inode][0].Process.PID != uint32(handedTo.Process.Pid) {
		t.Errorf("a socket handed to a child: %v, %v; want the child %d alone", found, err, handedTo.Process.Pid)
	}
	left, _ := oneHolder("sh", "-c", "sleep 60 & exit 0")
	time.Sleep(100 * time.Millisecond) // the shell exits, its sleep goes to init
	if found, err := s.Find(map[proc.Identity][]OwnedSocket{owner: {left}}); !errors.Is(err, ErrSearchIncomplete) {
		t.Errorf("a socket left to a process that no longer descends from its owner: %v, %v; want ErrSearchIncomplete", found, err)
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
	if err := unix.Dup3(int(aloneFile.Fd()), 4100, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(4100)
	if _, err := s.Find(owned); !errors.Is(err, ErrSearchIncomplete) {
		t.Errorf("an owner with descriptor 4100: %v, want ErrSearchIncomplete", err)
	}
}

// listenerFile listens on loopback and returns the listener and a
// descriptor of its own for the same socket.
func listenerFile(t testing.TB) (net.Listener, *os.File) {
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

// ownedSocket is the listener l as the daemon's index knows it: who's walk
// finds its struct sock and inode.
// descriptorOf is this process's descriptor of l.
func descriptorOf(t testing.TB, l net.Listener) int32 {
	t.Helper()
	raw, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int32
	if err := raw.Control(func(d uintptr) { fd = int32(d) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

func ownedSocket(t testing.TB, l net.Listener) OwnedSocket {
	t.Helper()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	r, err := Who(port)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range r.Sockets {
		if s.State == tracer.StateListen && s.Local.Port() == port {
			return OwnedSocket{Sock: uint64(s.Sock), Inode: s.Inode}
		}
	}
	t.Fatalf("no listener on %d: %+v", port, r.Sockets)
	return OwnedSocket{}
}

// BenchmarkSharersFind: what the daemon's who pays per port for its
// owners' sharers. alone: a listener no other descriptor names, the usual
// case (its reference count read, then its owner's table); shared: one a child
// holds too (both passes over the tasks, the child's table read).
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	alone := ownedSocket(b, l)
	sharedListener, f := listenerFile(b)
	child := exec.Command("sleep", "60")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	shared := ownedSocket(b, sharedListener)
	for _, bc := range []struct {
		name string
		sock OwnedSocket
	}{{"alone", alone}, {"shared", shared}} {
		b.Run(bc.name, func(b *testing.B) {
			owned := map[proc.Identity][]OwnedSocket{owner: {bc.sock}}
			for b.Loop() {
				if _, err := s.Find(owned); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
