package linux

import (
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
)

// TestKernelConnectErrors makes connections fail the three ways the kernel
// ends them for an error, and checks that the CLOSE lines say which: a
// refused connect (ECONNREFUSED), one whose SYNs nobody answered
// (ETIMEDOUT), and an established connection reset by its peer
// (ECONNRESET), while the peer that reset it closed without error.
func TestKernelConnectErrors(t *testing.T) {
	needPrivileges(t)
	free := freePorts(t, "127.0.0.1", 3)
	refused, reset, silent := free[0], free[1], free[2]
	ports := tracer.Ports{refused, reset, silent}
	slices.Sort(ports)
	rec, _ := trace(t, tracer.Config{Ports: ports})
	pid := uint32(os.Getpid())

	// Nothing listens on refused: the kernel answers the SYN with a RST.
	if _, err := net.Dial("tcp4", addr(refused)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to a closed port: %v, want ECONNREFUSED", err)
	}

	// The server resets the connection: SO_LINGER 0, then close.
	l, err := net.Listen("tcp4", addr(reset))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, s := connectTo(t, l)
	s.(*net.TCPConn).SetLinger(0)
	s.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer's reset: %v, want ECONNRESET", err)
	}
	resetClient := uint16(c.LocalAddr().(*net.TCPAddr).Port)

	// A listener whose accept queue (backlog 0: one connection) is full
	// drops SYNs; a client that retries once gives up after about 3 s.
	fd := fullListener(t, silent)
	defer unix.Close(fd)
	d := net.Dialer{Control: func(_, _ string, raw syscall.RawConn) error {
		var serr error
		raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1) })
		return serr
	}}
	if _, err := d.Dial("tcp4", addr(silent)); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("connect to a full listener: %v, want ETIMEDOUT", err)
	}

	const econnreset, etimedout, econnrefused = 104, 110, 111
	type want struct {
		sport, dport uint16
		old          tracer.State
		err          int32
	}
	wants := []want{
		{0, refused, tracer.StateSynSent, econnrefused},
		{0, silent, tracer.StateSynSent, etimedout},
		{resetClient, reset, tracer.StateEstablished, econnreset},
		{reset, resetClient, tracer.StateEstablished, 0},
	}
	find := func(recs []tracer.Record, w want) (tracer.Record, bool) {
		for _, r := range recs {
			if r.New == tracer.StateClose && r.Old == w.old && r.DPort == w.dport && (w.sport == 0 || r.SPort == w.sport) {
				return r, true
			}
		}
		return tracer.Record{}, false
	}
	recs := waitFor(t, rec, "the failed connections' CLOSE lines", func(recs []tracer.Record) bool {
		for _, w := range wants {
			if _, ok := find(recs, w); !ok {
				return false
			}
		}
		return true
	})
	for _, w := range wants {
		r, _ := find(recs, w)
		if r.Err != w.err || r.PID != pid {
			t.Errorf("%s -> CLOSE on port %d: error %d (%s), pid %d; want error %d, pid %d\n%s",
				w.old, w.dport, r.Err, tracer.ErrnoName(r.Err), r.PID, w.err, pid, dump([]tracer.Record{r}))
		}
	}
}

func addr(port uint16) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) }

// fullListener listens on port with a backlog of 0 and fills its accept
// queue with one connection it never accepts.
func fullListener(t *testing.T, port uint16) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	sa := &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp4", addr(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return fd
}
