package linux

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A role keeps its main goroutine on the main thread, whose name is the
// process's: onNamedThread then renames another thread, never the process.
func init() {
	if os.Getenv("PORTTRACE_TEST_ROLE") != "" {
		runtime.LockOSThread()
	}
}

// The privileged tests drive real loopback traffic from separate processes,
// so that every owner can be told apart: the test binary runs itself again
// in a role chosen by PORTTRACE_TEST_ROLE.
func TestMain(m *testing.M) {
	if role := os.Getenv("PORTTRACE_TEST_ROLE"); role != "" {
		if err := runRole(role); err != nil {
			fmt.Fprintf(os.Stderr, "role %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// closer says which end of a test connection closes first.
type closer string

const (
	clientFirst closer = "client"
	serverFirst closer = "server"
)

func runRole(role string) error {
	addr := os.Getenv("PORTTRACE_TEST_ADDR")
	first := closer(os.Getenv("PORTTRACE_TEST_CLOSER"))
	// A role joins its cgroup before it makes any socket; its children
	// are born in it.
	if cgroup := os.Getenv("PORTTRACE_TEST_CGROUP"); cgroup != "" {
		if err := os.WriteFile(filepath.Join(cgroup, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return fmt.Errorf("joining cgroup %s: %w", cgroup, err)
		}
	}
	// A role started in a network namespace of its own brings its
	// loopback up first: a new namespace's is down.
	if os.Getenv("PORTTRACE_TEST_NEW_NETNS") != "" {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	switch role {
	case "server":
		return serveWithChild(addr)
	case "acceptor":
		return acceptOne(first)
	case "client":
		if name := os.Getenv("PORTTRACE_TEST_THREAD"); name != "" {
			return onNamedThread(name, func() error { return connectOnce(addr, first) })
		}
		return connectOnce(addr, first)
	case "hold":
		return holdListener(addr, os.Getenv("PORTTRACE_TEST_REUSEPORT") != "")
	case "daemon":
		return daemonize(addr)
	case "daemon-child":
		return serveForever()
	case "passer":
		return passConnection(addr, os.Getenv("PORTTRACE_TEST_UNIX"))
	case "receiver":
		return receiveConnection(os.Getenv("PORTTRACE_TEST_UNIX"))
	case "forker":
		return closeInChild(addr)
	case "closer":
		return unix.Close(3)
	case "timewait":
		return timeWaitPair(addr, os.Getenv("PORTTRACE_TEST_LOCAL"))
	case "bind":
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
			return fmt.Errorf("bind to %s succeeded, want EADDRINUSE", addr)
		}
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

// onNamedThread runs fn on an OS thread of its own named name (prctl
// PR_SET_NAME), as Java and Chromium name the threads that use sockets.
func onNamedThread(name string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the renamed thread dies with the goroutine.
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(unsafe.StringData(name+"\x00"))), 0, 0, 0); err != nil {
			done <- fmt.Errorf("naming the thread: %w", err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// holdListener listens (with SO_REUSEPORT if asked, as a pre-fork server
// group does), says "ready" and holds the listener until stdin closes.
func holdListener(addr string, reusePort bool) error {
	// Go listens on a dual-stack [::] for "tcp" with 0.0.0.0: ask for
	// IPv4 when the address is.
	network := "tcp"
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is4() {
		network = "tcp4"
	}
	listen := net.Listen
	if reusePort {
		listen = ListenReusePort
	}
	l, err := listen(network, addr)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// serveWithChild listens, then hands the listener to a child process that
// accepts: the pre-fork server shape, where the listener's owner and the
// connection's owner differ. It prints the child's pid and waits for it.
func serveWithChild(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return err
	}
	child, err := startChild("acceptor", f)
	f.Close()
	if err != nil {
		return err
	}
	fmt.Printf("acceptor %d\n", child.Process.Pid)
	return child.Wait()
}

// startChild starts this binary in role with f as its fd 3: a socket a
// child inherits.
func startChild(role string, f *os.File) (*exec.Cmd, error) {
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE="+role)
	child.ExtraFiles = []*os.File{f}
	child.Stderr = os.Stderr
	return child, child.Start()
}

// daemonize is a daemon started with "daemon on": it listens, hands the
// listener to a child that serves (the master), says the child's pid and
// exits at once.
func daemonize(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return err
	}
	child, err := startChild("daemon-child", f)
	if err != nil {
		return err
	}
	fmt.Printf("child %d\n", child.Process.Pid)
	return nil
}

// serveForever serves the listener it inherited as fd 3 until killed.
func serveForever() error {
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go finish(c, false)
	}
}

// passConnection connects, passes the connection over SCM_RIGHTS to the
// receiver listening at path, and once the receiver has it, closes its own
// copy and exits.
func passConnection(addr, path string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		return err
	}
	defer f.Close()
	u, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer u.Close()
	if _, _, err := u.WriteMsgUnix([]byte{0}, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return err
	}
	// Until the receiver takes it, the socket is held by no process,
	// only by the message in flight.
	_, err = u.Read(make([]byte, 1))
	return err
}

// receiveConnection takes a connection over SCM_RIGHTS at path, says
// "received", holds it until stdin closes, then closes it.
func receiveConnection(path string) error {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("ready")
	u, err := l.AcceptUnix()
	if err != nil {
		return err
	}
	defer u.Close()
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := u.ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("no control message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return fmt.Errorf("no descriptor passed (%v)", err)
	}
	if _, err := u.Write([]byte{0}); err != nil {
		return err
	}
	fmt.Println("received")
	io.Copy(io.Discard, os.Stdin)
	return unix.Close(fds[0])
}

// closeInChild connects, hands the connection to a child that closes it
// (fd 3, the closer role), closes its own copy and waits for the child:
// the connection's last holder is the child, while its parent lives on.
func closeInChild(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		return err
	}
	child, err := startChild("closer", f)
	f.Close()
	c.Close()
	if err != nil {
		return err
	}
	fmt.Printf("child %d\n", child.Process.Pid)
	return child.Wait()
}

func acceptOne(first closer) error {
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	defer l.Close()
	c, err := l.Accept()
	if err != nil {
		return err
	}
	return finish(c, first == serverFirst)
}

// connectOnce connects, with Multipath TCP if PORTTRACE_TEST_MPTCP is set
// (Go's listeners use it by default, its dialers do not), from the address
// PORTTRACE_TEST_LOCAL if set, and closes.
func connectOnce(addr string, first closer) error {
	d, err := dialerFrom(os.Getenv("PORTTRACE_TEST_LOCAL"))
	if err != nil {
		return err
	}
	mptcp := os.Getenv("PORTTRACE_TEST_MPTCP") != ""
	d.SetMultipathTCP(mptcp)
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	if used, err := c.(*net.TCPConn).MultipathTCP(); mptcp && (err != nil || !used) {
		c.Close()
		return fmt.Errorf("the connection to %s fell back to TCP (%v)", addr, err)
	}
	return finish(c, first == clientFirst)
}

// dialerFrom is a dialer that connects from local ("" for any address).
func dialerFrom(local string) (*net.Dialer, error) {
	if local == "" {
		return &net.Dialer{}, nil
	}
	ap, err := netip.ParseAddrPort(local)
	if err != nil {
		return nil, fmt.Errorf("local address: %w", err)
	}
	return &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(ap)}, nil
}

// timeWaitPair makes one connection to itself, from local to addr, and
// closes the accepting end first: the accepted socket, on addr's port,
// goes TIME_WAIT, owned by this process. It says "ready" and keeps its
// network namespace (and with it the TIME_WAIT socket) until stdin closes.
func timeWaitPair(addr, local string) error {
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	d, err := dialerFrom(local)
	if err != nil {
		return err
	}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	s, err := l.Accept()
	l.Close()
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	if err := finish(c, false); err != nil {
		return err
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// loopbackUp brings up lo in this process's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading lo's flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// finish closes at once if this end closes first; otherwise it waits for
// the peer's FIN (EOF) and then closes.
func finish(c net.Conn, closeFirst bool) error {
	if !closeFirst {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			c.Close()
			return err
		}
	}
	return c.Close()
}

// roleProc is a helper process started in a role.
type roleProc struct {
	role   string
	cmd    *exec.Cmd
	stdout *bufio.Reader
	// stdin closing tells a role that holds something to let it go.
	stdin io.WriteCloser
}

func startRole(t *testing.T, role, addr string, first closer) *roleProc {
	t.Helper()
	return startRoleEnv(t, role, addr, first)
}

// startRoleEnv is startRole with more of the environment: the role's
// cgroup (PORTTRACE_TEST_CGROUP), its thread's name (PORTTRACE_TEST_THREAD),
// Multipath TCP for a client (PORTTRACE_TEST_MPTCP).
func startRoleEnv(t *testing.T, role, addr string, first closer, env ...string) *roleProc {
	t.Helper()
	return startRoleAttr(t, nil, role, addr, first, env...)
}

// startRoleInNewNetNS starts a role in a network namespace of its own
// (which lives as long as the role), loopback up, and returns it with the
// namespace.
func startRoleInNewNetNS(t *testing.T, role, addr string, env ...string) (*roleProc, Namespace) {
	t.Helper()
	p := startRoleAttr(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}, role, addr, "", append(env, "PORTTRACE_TEST_NEW_NETNS=1")...)
	ns, err := FindNamespace(strconv.Itoa(p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return p, ns
}

func startRoleAttr(t *testing.T, attr *syscall.SysProcAttr, role, addr string, first closer, env ...string) *roleProc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.SysProcAttr = attr
	cmd.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE="+role, "PORTTRACE_TEST_ADDR="+addr, "PORTTRACE_TEST_CLOSER="+string(first))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", role, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &roleProc{role: role, cmd: cmd, stdout: bufio.NewReader(out), stdin: in}
}

// startHolder starts a process holding a listener on addr and waits until
// it listens; closing the returned function's stdin ends it.
func startHolder(t *testing.T, addr string, reusePort bool) (pid uint32, stop func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PORTTRACE_TEST_ROLE=hold", "PORTTRACE_TEST_ADDR="+addr)
	if reusePort {
		cmd.Env = append(cmd.Env, "PORTTRACE_TEST_REUSEPORT=1")
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { stdin.Close(); cmd.Wait() }
	t.Cleanup(stop)
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("holder on %s: %q, %v", addr, line, err)
	}
	return uint32(cmd.Process.Pid), stop
}

// childPID reads the "acceptor PID" or "child PID" line a role prints.
func (p *roleProc) childPID(t *testing.T) uint32 {
	t.Helper()
	line, err := p.stdout.ReadString('\n')
	if err != nil {
		t.Fatalf("reading %s's child pid: %v", p.role, err)
	}
	fields := strings.Fields(line)
	if len(fields) != 2 {
		t.Fatalf("bad child line %q from %s", line, p.role)
	}
	pid, err := strconv.ParseUint(fields[1], 10, 32)
	if err != nil {
		t.Fatalf("bad child line %q from %s: %v", line, p.role, err)
	}
	return uint32(pid)
}

// expect reads the next line a role prints and checks it.
func (p *roleProc) expect(t *testing.T, want string) {
	t.Helper()
	if line, err := p.stdout.ReadString('\n'); err != nil || line != want+"\n" {
		t.Fatalf("%s said %q (%v), want %q", p.role, line, err, want)
	}
}

func (p *roleProc) wait(t *testing.T) {
	t.Helper()
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("%s: %v", p.role, err)
	}
}
