package linux

import (
	"context"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenReusePort listens on addr with SO_REUSEPORT, so that several
// processes share the port and the kernel spreads its connections over
// them, as a pre-fork server group does. Plain TCP, as a C server would
// listen: Go listens with MPTCP by default.
func ListenReusePort(network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), network, addr)
}
