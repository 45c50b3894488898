package linux

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenReusePort: a second listener on the same port succeeds, as a
// holder beside another needs, where a plain listener does not; and it is
// TCP, not MPTCP.
func TestListenReusePort(t *testing.T) {
	l1, err := ListenReusePort("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	addr := l1.Addr().String()
	l2, err := ListenReusePort("tcp4", addr)
	if err != nil {
		t.Fatalf("second listener on %s: %v", addr, err)
	}
	defer l2.Close()
	if l, err := net.Listen("tcp4", addr); err == nil {
		l.Close()
		t.Fatalf("a listener without SO_REUSEPORT also got %s", addr)
	}
	rc, err := l1.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var perr error
	rc.Control(func(fd uintptr) { proto, perr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if perr != nil || proto != unix.IPPROTO_TCP {
		t.Errorf("SO_PROTOCOL = %d, %v; want IPPROTO_TCP (%d)", proto, perr, unix.IPPROTO_TCP)
	}
}
