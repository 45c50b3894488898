package api

import (
	"errors"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// write sends b with MSG_NOSIGNAL: to a client that has hung up, the write
// fails with EPIPE and raises no SIGPIPE. A watch asks for SIGPIPE (an
// operator's stop request), so the kernel's would otherwise stop it.
func write(c net.Conn, b []byte) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c.Write(b)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	written := 0
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		for written < len(b) {
			n, err := unix.SendmsgN(int(fd), b[written:], nil, nil, unix.MSG_NOSIGNAL)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return false // wait until the socket takes more
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				sendErr = os.NewSyscallError("sendmsg", err)
				return true
			}
			written += n
		}
		return true
	})
	if err == nil {
		err = sendErr
	}
	return written, err
}
