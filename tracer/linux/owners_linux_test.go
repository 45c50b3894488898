package linux

import (
	"context"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"

	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketRecords are the records of one socket, told apart by its ports.
func socketRecords(recs []tracer.Record, sport, dport uint16) []tracer.Record {
	var out []tracer.Record
	for _, r := range recs {
		if r.Type != tracer.RecordBind && r.SPort == sport && r.DPort == dport {
			out = append(out, r)
		}
	}
	return out
}

// testCgroup makes a cgroup v2 cgroup for the test and returns its
// directory and id (its directory's inode number). Where no cgroup2 file
// system is mounted (the vmtest guests), it mounts one for the test.
func testCgroup(t *testing.T, name string) (string, uint64) {
	t.Helper()
	root := cgroup2Mount(t)
	if root == "" {
		root = t.TempDir()
		if err := unix.Mount("none", root, "cgroup2", 0, ""); err != nil {
			t.Fatalf("mounting cgroup2: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	}
	dir := filepath.Join(root, "porttrace-test-"+name+"-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered before the processes that join it, so it runs after they
	// are killed: a cgroup with members cannot be removed.
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("removing cgroup: %v", err)
		}
	})
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return dir, st.Ino
}

// cgroup2Mount is where a cgroup2 file system is mounted, "" if nowhere.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 25 0:31 / /sys/fs/cgroup/unified rw,... - cgroup2 cgroup2 rw"
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4]
			}
		}
	}
	return ""
}

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// architecture porttrace supports.
const userHZ = 100

// startTicks reads a process's start time from /proc/PID/stat (field 22),
// in clock ticks since boot.
func startTicks(t *testing.T, pid uint32) uint64 {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The name, field 2, is in parentheses and may hold spaces.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ticks, err := strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return ticks
}

func ownComm(t *testing.T) string {
	t.Helper()
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(comm))
}

// TestKernelProcessThreadAndCgroup: every line names the owning process
// by its name (never a thread's), the thread that acted, the process's
// start time as /proc shows it, and its cgroup; an event in a softirq
// carries the socket's own cgroup.
func TestKernelProcessThreadAndCgroup(t *testing.T) {
	needPrivileges(t)
	serverCgroup, serverCgroupID := testCgroup(t, "server")
	clientCgroup, clientCgroupID := testCgroup(t, "client")
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	rec, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}})

	server := startRoleEnv(t, "server", addr, clientFirst, "PORTTRACE_TEST_CGROUP="+serverCgroup)
	listenerPID, acceptorPID := uint32(server.cmd.Process.Pid), server.childPID(t)
	listenerStart := startTicks(t, listenerPID)
	const thread = "pt-dialer"
	client := startRoleEnv(t, "client", addr, clientFirst, "PORTTRACE_TEST_CGROUP="+clientCgroup, "PORTTRACE_TEST_THREAD="+thread)
	clientPID := uint32(client.cmd.Process.Pid)
	client.wait(t)
	server.wait(t)

	recs := waitFor(t, rec, "both sockets to close and the listener to go", func(recs []tracer.Record) bool {
		cport := clientPort(recs, port)
		return len(socketRecords(recs, cport, port)) >= len(activeClose) &&
			len(socketRecords(recs, port, cport)) >= len(acceptOpen)+len(passiveClose) && len(socketRecords(recs, port, 0)) >= 2
	})
	cport := clientPort(recs, port)
	comm := ownComm(t)
	check := func(who string, rs []tracer.Record, pid uint32, thread string, cgroup uint64) {
		t.Helper()
		for _, r := range rs {
			if r.PID != pid || r.Comm.String() != comm || r.Thread.String() != thread || r.CgroupID != cgroup || r.StartNs == 0 {
				t.Errorf("%s line %s -> %s: pid %d comm %q thread %q cgroup %d start %d, want pid %d comm %q thread %q cgroup %d\nrecords:\n%s",
					who, r.Old, r.New, r.PID, r.Comm, r.Thread, r.CgroupID, r.StartNs, pid, comm, thread, cgroup, dump(recs))
			}
		}
	}
	// Go's runtime threads carry the process's name unless renamed.
	check("client", socketRecords(recs, cport, port), clientPID, thread, clientCgroupID)
	check("server", socketRecords(recs, port, cport), acceptorPID, comm, serverCgroupID)
	listener := socketRecords(recs, port, 0)
	check("listener", listener, listenerPID, comm, serverCgroupID)
	if got := listener[0].StartNs / (1e9 / userHZ); got != listenerStart {
		t.Errorf("listener's owner started at %d ns since boot, /proc says %d ticks", listener[0].StartNs, listenerStart)
	}

	// The server's socket is established in a softirq, on whatever task
	// was on the CPU: its own cgroup is the listener's. (Its LISTEN ->
	// SYN_RECV came without the peer's port on Debian's 5.10, 6.1 and 6.12,
	// which set the port after the state.)
	for _, ev := range rec.events() {
		if ev.Kind == tracer.KindState && ev.OldState == tracer.StateSynRecv && ev.NewState == tracer.StateEstablished && ev.DPort == cport {
			if ev.SockCgroupID != serverCgroupID {
				t.Errorf("SYN_RECV -> ESTABLISHED event: socket cgroup %d, want the listener's %d", ev.SockCgroupID, serverCgroupID)
			}
			return
		}
	}
	t.Errorf("no SYN_RECV -> ESTABLISHED event for the client's port %d", cport)
}

// needProgram finds a program a test drives, in PATH or /usr/sbin (where
// Debian puts daemons), skipping the test where it is missing, except in
// CI, which must run it.
func needProgram(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		path, err = exec.LookPath(filepath.Join("/usr/sbin", name))
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must run this test against %s: %v", name, err)
		}
		t.Skip(err)
	}
	return path
}

// javaThreads is a Java program in Tomcat's pattern: named threads use the
// sockets (a client, and an acceptor that reads until the client closes).
const javaThreads = `import java.io.*;
import java.net.*;

public class Threads {
	public static void main(String[] args) throws Exception {
		int port = Integer.parseInt(args[0]);
		ServerSocket server = new ServerSocket();
		server.bind(new InetSocketAddress("127.0.0.1", port));
		Thread acceptor = new Thread(() -> {
			try (Socket s = server.accept()) {
				s.getInputStream().read();
			} catch (IOException e) {
				throw new UncheckedIOException(e);
			}
		}, "pt-acceptor");
		acceptor.start();
		Thread client = new Thread(() -> {
			try (Socket c = new Socket("127.0.0.1", port)) {
			} catch (IOException e) {
				throw new UncheckedIOException(e);
			}
		}, "pt-client");
		client.start();
		client.join();
		acceptor.join();
		server.close();
	}
}
`

// TestRealJavaNamedThreads: a JVM's sockets belong to the process "java",
// whichever named thread used them, and each line says which thread that
// was (Tomcat's lines said http-nio-8080-A, not java).
func TestRealJavaNamedThreads(t *testing.T) {
	needPrivileges(t)
	javac, java := needProgram(t, "javac"), needProgram(t, "java")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Threads.java"), []byte(javaThreads), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(javac, "-d", dir, filepath.Join(dir, "Threads.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	port := freePort(t, "127.0.0.1")
	rec, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}})
	jvm := exec.Command(java, "-cp", dir, "Threads", strconv.Itoa(int(port)))
	if out, err := jvm.CombinedOutput(); err != nil {
		t.Fatalf("java: %v\n%s", err, out)
	}
	pid := uint32(jvm.Process.Pid)

	recs := waitFor(t, rec, "both sockets to close and the listener to go", func(recs []tracer.Record) bool {
		cport := clientPort(recs, port)
		return len(socketRecords(recs, cport, port)) >= len(activeClose) &&
			len(socketRecords(recs, port, cport)) >= len(acceptOpen)+len(passiveClose) && len(socketRecords(recs, port, 0)) >= 2
	})
	cport := clientPort(recs, port)
	for _, tc := range []struct {
		who    string
		recs   []tracer.Record
		thread string
	}{
		{"client", socketRecords(recs, cport, port), "pt-client"},
		{"server", socketRecords(recs, port, cport), "pt-acceptor"},
	} {
		for _, r := range tc.recs {
			if r.PID != pid || r.Comm.String() != "java" || r.Thread.String() != tc.thread {
				t.Errorf("%s line %s -> %s: pid %d comm %q thread %q, want pid %d comm java thread %s\nrecords:\n%s",
					tc.who, r.Old, r.New, r.PID, r.Comm, r.Thread, pid, tc.thread, dump(recs))
			}
		}
	}
	for _, r := range socketRecords(recs, port, 0) {
		if r.PID != pid || r.Comm.String() != "java" {
			t.Errorf("listener line %s -> %s: pid %d comm %q, want %d java", r.Old, r.New, r.PID, r.Comm, pid)
		}
	}
}

// widenPingGroups lets this process open ICMP ping sockets
// (net.ipv4.ping_group_range), as it was before when the test ends.
func widenPingGroups(t *testing.T) {
	t.Helper()
	const path = "/proc/sys/net/ipv4/ping_group_range"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("0 2147483647"), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(path, old, 0) })
}

// socketFD opens a socket the test closes when it ends.
func socketFD(t *testing.T, family, typ, proto int) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatalf("socket(%d, %d, %d): %v", family, typ, proto, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestKernelOnlyPortHoldersCount: raw and ping sockets keep a number in
// the port field (a raw socket its protocol, a ping socket its ICMP
// identifier) and a netlink socket can be handed an IPv4 address, but none
// of them holds a port: who does not list them, the watch reports no bind.
func TestKernelOnlyPortHoldersCount(t *testing.T) {
	needPrivileges(t)
	widenPingGroups(t)
	port := freePort(t, "127.0.0.1")
	rec, _ := trace(t, tracer.Config{})
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	for _, proto := range []int{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		if err := unix.Bind(socketFD(t, unix.AF_INET, unix.SOCK_RAW, proto), lo); err != nil {
			t.Fatalf("binding a raw socket of protocol %d: %v", proto, err)
		}
	}
	ping := &unix.SockaddrInet4{Addr: lo.Addr, Port: int(port)}
	if err := unix.Bind(socketFD(t, unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP), ping); err != nil {
		t.Fatalf("binding a ping socket to identifier %d: %v", port, err)
	}
	// NETLINK_XFRM's number is IPPROTO_TCP's: such a socket printed
	// "BIND tcp EINVAL". Where xfrm_user is not loaded (the vmtest
	// guests), NETLINK_ROUTE stands in.
	netlink, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_XFRM)
	if err != nil {
		netlink = socketFD(t, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
	} else {
		t.Cleanup(func() { unix.Close(netlink) })
	}
	if err := unix.Bind(netlink, ping); err != unix.EINVAL {
		t.Fatalf("binding an IPv4 address to a netlink socket: %v, want EINVAL", err)
	}

	self := uint32(os.Getpid())
	for _, p := range []uint16{unix.IPPROTO_TCP, unix.IPPROTO_UDP, port} {
		r, err := Who(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range r.Sockets {
			if slices.Contains(s.PIDs, self) {
				t.Errorf("who %d lists %s %s %v held by this test: only TCP, MPTCP and UDP sockets hold ports", p, s.Proto, s.State, s.Local)
			}
		}
	}

	// A TCP bind of the port after them: once its line is in, theirs
	// would be too.
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	recs := waitFor(t, rec, "the TCP listener's bind", func(recs []tracer.Record) bool {
		return slices.ContainsFunc(recs, func(r tracer.Record) bool {
			return r.Type == tracer.RecordBind && r.PID == self && r.SPort == port && r.Err == 0
		})
	})
	for _, r := range recs {
		if r.Type == tracer.RecordBind && r.PID == self && !(r.SPort == port && r.Err == 0) {
			t.Errorf("bind line for a socket that holds no port: %s %s:%d error %d", r.Proto, r.SAddr, r.SPort, r.Err)
		}
	}
}

// mptcpEnabled makes sure the kernel lets sockets use Multipath TCP, as it
// was before when the test ends, and reports whether the kernel has it at
// all (Debian's 5.10 is built without).
func mptcpEnabled(t *testing.T) bool {
	t.Helper()
	const path = "/proc/sys/net/mptcp/enabled"
	old, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP)
		if err == nil {
			unix.Close(fd)
			t.Fatalf("no %s, yet an MPTCP socket opens", path)
		}
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(old)) != "1" {
		if err := os.WriteFile(path, []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(path, old, 0) })
	}
	return true
}

// TestKernelMPTCPSubflowOwners: with an MPTCP client and server, the TCP
// subflow that carries the connection is what the state events report,
// while accept names the MPTCP socket and a kworker closes the subflow.
// Every line still names the accepting process, never a kernel thread,
// whichever form of the accept hook the kernel offers (the kretprobe sees
// the subflow, the syscalls' fd the MPTCP socket). On a kernel without
// MPTCP the check is that the programs, which read MPTCP's types where
// they exist, load at all.
func TestKernelMPTCPSubflowOwners(t *testing.T) {
	needPrivileges(t)
	if !mptcpEnabled(t) {
		trace(t, tracer.Config{})
		t.Logf("this kernel has no MPTCP (%s): the tracer loaded without it", kernelRelease(t))
		return
	}
	k := probeThisKernel(t)
	for hi := range defaultHooks {
		h := &defaultHooks[hi]
		if h.name != hookAccept {
			continue
		}
		for _, alt := range h.alts {
			if ok, why := k.available(h, alt); !ok {
				t.Logf("accept %s not on this kernel: %s", alt.form, why)
				continue
			}
			t.Run(alt.form.String(), func(t *testing.T) {
				table := slices.Clone(defaultHooks)
				table[hi].alts = []alternative{alt}
				mptcpCase(t, table)
			})
		}
	}
}

// TestKernelSnapshotNamesMPTCPSubflow: the snapshot a watch starts from
// names an MPTCP listener's TCP subflow, the socket whose state changes the
// events report (its close here), so that a watch can follow a Go listener
// older than itself. On a kernel without MPTCP the listener is plain TCP,
// which the snapshot names itself.
func TestKernelSnapshotNamesMPTCPSubflow(t *testing.T) {
	needPrivileges(t)
	withMPTCP := mptcpEnabled(t)
	port := freePort(t, "127.0.0.1")
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	l, err := lc.Listen(context.Background(), "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rec, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}})
	listening := snapshotListener(t, port)
	traced := listening.Sock
	if withMPTCP {
		if listening.Proto != tracer.ProtoMPTCP || listening.Subflow == 0 {
			t.Fatalf("snapshot of port %d: %+v, want an MPTCP listener with its subflow", port, listening)
		}
		traced = listening.Subflow
	}
	l.Close()
	closed := func(ev tracer.Event) bool {
		return ev.Kind == tracer.KindState && ev.SPort == port && ev.OldState == tracer.StateListen
	}
	waitFor(t, rec, "the listener's close", func([]tracer.Record) bool { return slices.ContainsFunc(rec.events(), closed) })
	for _, ev := range rec.events() {
		if closed(ev) && ev.Sock != traced {
			t.Errorf("the listener's close names socket %#x, the snapshot %#x (%+v)", ev.Sock, traced, listening)
		}
	}
}

func mptcpCase(t *testing.T, table []hook) {
	port := freePort(t, "127.0.0.1")
	rec, _ := traceHooks(t, tracer.Config{Ports: tracer.Ports{port}}, table)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	server := startRole(t, "server", addr, clientFirst)
	acceptorPID := server.childPID(t)
	client := startRoleEnv(t, "client", addr, clientFirst, "PORTTRACE_TEST_MPTCP=1")
	clientPID := uint32(client.cmd.Process.Pid)
	client.wait(t)
	server.wait(t)

	recs := waitFor(t, rec, "the server's subflow to close", func(recs []tracer.Record) bool {
		cport := clientPort(recs, port)
		return slices.ContainsFunc(socketRecords(recs, port, cport), func(r tracer.Record) bool {
			return r.New == tracer.StateLastAck || r.New == tracer.StateClose || r.New == tracer.StateFinWait1
		}) && len(socketRecords(recs, port, 0)) >= 2
	})
	cport := clientPort(recs, port)
	for _, tc := range []struct {
		who          string
		sport, dport uint16
		pid          uint32
	}{{"client", cport, port, clientPID}, {"server", port, cport, acceptorPID}} {
		rs := socketRecords(recs, tc.sport, tc.dport)
		if len(rs) == 0 {
			t.Errorf("no %s lines", tc.who)
		}
		for _, r := range rs {
			if r.PID != tc.pid {
				t.Errorf("%s subflow line %s -> %s: owner %d %s via %s, want %d\nrecords:\n%s",
					tc.who, r.Old, r.New, r.PID, r.Comm, r.OwnerVia, tc.pid, dump(recs))
			}
		}
	}
	// The accept of the MPTCP socket named its subflow, which knows it.
	for _, ev := range rec.events() {
		if ev.Kind == tracer.KindAccept && ev.DPort == cport {
			if ev.Parent == 0 || ev.Proto != tracer.ProtoTCP {
				t.Errorf("accept event %+v: want the TCP subflow, with its MPTCP socket as parent", ev)
			}
			return
		}
	}
	t.Errorf("no accept event for the client's port %d", cport)
}

func kernelRelease(t *testing.T) string {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelAtLeast says whether the running kernel is release major.minor or
// later.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var maj, min int
	if _, err := fmt.Sscanf(kernelRelease(t), "%d.%d", &maj, &min); err != nil {
		t.Fatalf("kernel release %q: %v", kernelRelease(t), err)
	}
	return maj > major || maj == major && min >= minor
}

// ownerChanges are the lines that say a socket changed hands.
func ownerChanges(recs []tracer.Record, sport, dport uint16) []tracer.Record {
	return slices.DeleteFunc(socketRecords(recs, sport, dport), func(r tracer.Record) bool { return r.Type != tracer.RecordOwner })
}

// serveInProcess accepts connections on addr in this process, each read to
// its end and closed: a peer for the roles' client sockets.
func serveInProcess(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
}

// TestKernelDaemonForkedAfterListen: a daemon's startup process binds,
// listens, forks the process that serves and exits at once. The listener
// changes hands then: porttrace looks up who holds it after the exit and
// names the child, whose are the connections it accepts and the
// listener's final close; the bind and listen stay the startup process's,
// which made them.
func TestKernelDaemonForkedAfterListen(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	rec := traceLoop(t, tracer.Config{Ports: tracer.Ports{port}})
	daemon := startRole(t, "daemon", addr, clientFirst)
	startupPID, childPID := uint32(daemon.cmd.Process.Pid), daemon.childPID(t)
	t.Cleanup(func() { unix.Kill(int(childPID), unix.SIGKILL) })
	daemon.wait(t)

	recs := waitFor(t, rec, "the listener to change hands", func(recs []tracer.Record) bool {
		return len(ownerChanges(recs, port, 0)) > 0
	})
	if changes := ownerChanges(recs, port, 0); len(changes) != 1 || changes[0].PID != childPID || changes[0].OwnerVia != tracer.OwnerHolder ||
		changes[0].Prev.PID != startupPID || !changes[0].PrevExited || changes[0].New != tracer.StateListen {
		t.Fatalf("owner lines %+v, want one: the listener from %d (exited) to %d via holder\nrecords:\n%s", changes, startupPID, childPID, dump(recs))
	}
	startRole(t, "client", addr, clientFirst).wait(t)
	// Stopping the child closes the listener, in the child.
	if err := unix.Kill(int(childPID), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recs = waitFor(t, rec, "the listener's close", func(recs []tracer.Record) bool {
		return slices.ContainsFunc(socketRecords(recs, port, 0), func(r tracer.Record) bool { return r.New == tracer.StateClose })
	})
	cport := clientPort(recs, port)
	for _, r := range append(socketRecords(recs, port, 0), socketRecords(recs, port, cport)...) {
		want := childPID
		if r.Type == tracer.RecordListen {
			want = startupPID
		}
		if r.PID != want {
			t.Errorf("%s line %s -> %s: owner %d via %s, want %d\nrecords:\n%s", r.Type, r.Old, r.New, r.PID, r.OwnerVia, want, dump(recs))
		}
	}
	for _, r := range recs {
		if r.Type == tracer.RecordBind && r.SPort == port && r.PID != startupPID {
			t.Errorf("bind line owned by %d, want the startup process %d", r.PID, startupPID)
		}
	}
}

// TestKernelSocketPassedOverSCMRights: a process connects, passes the
// connection to another over a unix socket and exits; the receiver, found
// holding it, owns it, and its close is its own.
func TestKernelSocketPassedOverSCMRights(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	rec := traceLoop(t, tracer.Config{Ports: tracer.Ports{port}})
	serveInProcess(t, addr)
	path := filepath.Join(t.TempDir(), "pass.sock")
	receiver := startRoleEnv(t, "receiver", "", clientFirst, "PORTTRACE_TEST_UNIX="+path)
	receiver.expect(t, "ready")
	passer := startRoleEnv(t, "passer", addr, clientFirst, "PORTTRACE_TEST_UNIX="+path)
	passerPID, receiverPID := uint32(passer.cmd.Process.Pid), uint32(receiver.cmd.Process.Pid)
	passer.wait(t)
	receiver.expect(t, "received")

	recs := waitFor(t, rec, "the connection to change hands", func(recs []tracer.Record) bool {
		return len(ownerChanges(recs, clientPort(recs, port), port)) > 0
	})
	cport := clientPort(recs, port)
	if changes := ownerChanges(recs, cport, port); changes[0].PID != receiverPID || changes[0].OwnerVia != tracer.OwnerHolder ||
		changes[0].Prev.PID != passerPID || !changes[0].PrevExited {
		t.Fatalf("owner line %+v, want the connection from %d (exited) to %d via holder\nrecords:\n%s", changes[0], passerPID, receiverPID, dump(recs))
	}
	receiver.stdin.Close()
	receiver.wait(t)
	recs = waitFor(t, rec, "the receiver's close", func(recs []tracer.Record) bool {
		return slices.ContainsFunc(socketRecords(recs, cport, port), func(r tracer.Record) bool { return r.New == tracer.StateFinWait1 })
	})
	for _, r := range socketRecords(recs, cport, port) {
		want := receiverPID
		if r.Type == tracer.RecordState && (r.New == tracer.StateSynSent || r.New == tracer.StateEstablished) {
			want = passerPID
		}
		if r.PID != want || (r.Type == tracer.RecordOwner && r.PID != receiverPID) {
			t.Errorf("%s line %s -> %s: owner %d via %s, want %d\nrecords:\n%s", r.Type, r.Old, r.New, r.PID, r.OwnerVia, want, dump(recs))
		}
	}
	if n := len(ownerChanges(recs, cport, port)); n != 1 {
		t.Errorf("%d owner lines, want 1", n)
	}
}

// TestKernelChildClosesInheritedConnection: a process connects and hands
// the connection to a child, which closes it while the parent lives on.
// The close says who held it last: the child takes it over, with a line
// that says so.
func TestKernelChildClosesInheritedConnection(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	rec, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}})
	serveInProcess(t, addr)
	forker := startRole(t, "forker", addr, clientFirst)
	parentPID, childPID := uint32(forker.cmd.Process.Pid), forker.childPID(t)
	forker.wait(t)

	recs := waitFor(t, rec, "the child's close", func(recs []tracer.Record) bool {
		return slices.ContainsFunc(socketRecords(recs, clientPort(recs, port), port), func(r tracer.Record) bool { return r.New == tracer.StateFinWait1 })
	})
	var got []string
	for _, r := range socketRecords(recs, clientPort(recs, port), port) {
		got = append(got, fmt.Sprintf("%s %s->%s %d %s", r.Type, r.Old, r.New, r.PID, r.OwnerVia))
		if r.Type == tracer.RecordOwner && (r.Prev.PID != parentPID || r.PrevExited) {
			t.Errorf("owner line from %d (exited %v), want from the parent %d, alive", r.Prev.PID, r.PrevExited, parentPID)
		}
	}
	parent, child := strconv.Itoa(int(parentPID)), strconv.Itoa(int(childPID))
	want := []string{
		"state CLOSE->SYN_SENT " + parent + " connect",
		"state SYN_SENT->ESTABLISHED " + parent + " connect",
		"owner UNKNOWN->ESTABLISHED " + child + " close",
		"state ESTABLISHED->FIN_WAIT1 " + child + " close",
	}
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("client socket lines:\n%s\nwant them to start with:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// nginxConf runs nginx as Debian's does (daemon on, a master, workers),
// with every path it writes in dir, listening on a loopback port.
const nginxConf = `daemon on;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		location / { return 200 "ok\n"; }
	}
}
`

// children lists the processes whose parent is pid.
func children(t *testing.T, pid uint32) []uint32 {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []uint32
	for _, d := range dirs {
		child, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if ppid, _ := strconv.ParseUint(fields[4-3], 10, 32); uint32(ppid) == pid {
			out = append(out, uint32(child))
		}
	}
	return out
}

// waitGone waits until process pid has exited.
func waitGone(t *testing.T, pid uint32) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); unix.Kill(int(pid), 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs after 10s", pid)
		}
	}
}

// snapshotListener is the listener who's snapshot of port finds.
func snapshotListener(t *testing.T, port uint16) snapshot.PortSocket {
	t.Helper()
	r, err := Who(port)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(r.Sockets, func(s snapshot.PortSocket) bool { return s.State == tracer.StateListen })
	if i < 0 {
		t.Fatalf("no listener in the snapshot of port %d: %+v", port, r.Sockets)
	}
	return r.Sockets[i]
}

// checkSharers checks that Sharers, asked from the listener's owner,
// finds the holders of port's listener that who's walk finds: what the
// daemon's who adds to the owner it followed.
func checkSharers(t *testing.T, port uint16, owner uint32, want []uint32) {
	t.Helper()
	listening := snapshotListener(t, port)
	inode := listening.Inode
	s, err := LoadSharers()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := proc.Identify(owner)
	if err != nil {
		t.Fatal(err)
	}
	found, err := s.Find(map[proc.Identity][]OwnedSocket{id: {{Sock: uint64(listening.Sock), Inode: inode}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, h := range found[inode] {
		got = append(got, h.Process.PID)
	}
	if !slices.Equal(got, slices.Sorted(slices.Values(want))) || !slices.Equal(listening.PIDs, got) {
		t.Errorf("the listener's holders: %v found from its owner %d, %v by who's walk; want %v", got, owner, listening.PIDs, want)
	}
}

// TestRealNginxDaemon: nginx with "daemon on", as Debian runs it. Its
// startup process binds and listens, forks the master and exits at once;
// the master forks the workers, which accept. The listener is the
// master's from the startup process's exit on (porttrace looks up who
// holds it, and says so), its connections are the workers', and its close
// when the master stops is the master's, never the dead startup process's.
// From the master, Sharers finds the workers holding the listener too.
func TestRealNginxDaemon(t *testing.T) {
	needPrivileges(t)
	nginx := needProgram(t, "nginx")
	dir := t.TempDir()
	port := freePort(t, "127.0.0.1")
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := traceLoop(t, tracer.Config{Ports: tracer.Ports{port}})
	start := exec.Command(nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf)
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("starting nginx: %v\n%s", err, out)
	}
	startupPID := uint32(start.Process.Pid)
	pidFile, err := os.ReadFile(filepath.Join(dir, "nginx.pid"))
	if err != nil {
		t.Fatal(err)
	}
	master64, err := strconv.ParseUint(strings.TrimSpace(string(pidFile)), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	master := uint32(master64)
	var workers []uint32
	// Whatever the test saw of them, no nginx outlives it: the master's
	// children are looked up again, before the master goes.
	t.Cleanup(func() {
		for _, pid := range append(children(t, master), master) {
			unix.Kill(int(pid), unix.SIGKILL)
		}
	})
	// The master writes its pid file before it forks the workers.
	for deadline := time.Now().Add(10 * time.Second); len(workers) < 2; time.Sleep(20 * time.Millisecond) {
		if workers = children(t, master); time.Now().After(deadline) {
			t.Fatalf("master %d has children %v after 10s, want 2 workers", master, workers)
		}
	}
	waitFor(t, rec, "the listener to change hands", func(recs []tracer.Record) bool {
		return len(ownerChanges(recs, port, 0)) > 0
	})
	checkSharers(t, port, master, append([]uint32{master}, workers...))

	client := http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for range 4 {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err := unix.Kill(int(master), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, master)

	recs := waitFor(t, rec, "the listener's close", func(recs []tracer.Record) bool {
		return slices.ContainsFunc(socketRecords(recs, port, 0), func(r tracer.Record) bool { return r.New == tracer.StateClose })
	})
	check := func(what string, r tracer.Record, ok bool) {
		t.Helper()
		if !ok || r.Comm.String() != "nginx" {
			t.Errorf("%s: %s line %s -> %s owned by %d %s via %s (startup %d, master %d, workers %v)\nrecords:\n%s",
				what, r.Type, r.Old, r.New, r.PID, r.Comm, r.OwnerVia, startupPID, master, workers, dump(recs))
		}
	}
	changes := 0
	for _, r := range socketRecords(recs, port, 0) {
		switch r.Type {
		case tracer.RecordListen:
			check("the listen is the startup process's", r, r.PID == startupPID)
		case tracer.RecordOwner:
			changes++
			check("the listener goes to the master", r, r.PID == master && r.OwnerVia == tracer.OwnerHolder && r.Prev.PID == startupPID && r.PrevExited)
		default:
			check("the listener's close is the master's", r, r.PID == master)
		}
	}
	if changes != 1 {
		t.Errorf("%d owner lines for the listener, want 1", changes)
	}
	conns := 0
	for _, r := range recs {
		switch {
		case r.Type == tracer.RecordBind && r.SPort == port:
			check("the bind is the startup process's", r, r.PID == startupPID)
		case r.SPort == port && r.DPort != 0:
			conns++
			check("connections are the workers'", r, slices.Contains(workers, r.PID) && r.OwnerVia == tracer.OwnerAccept)
		}
	}
	if conns == 0 {
		t.Errorf("no line of the connections nginx accepted")
	}
}
