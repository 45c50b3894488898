package windows

import (
	"errors"
	"fmt"

	"golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer/why"
)

// Winsock errors a bind returns, by name.
var bindErrnos = map[windows.Errno]string{
	windows.WSAEADDRINUSE:    "WSAEADDRINUSE",
	windows.WSAEACCES:        "WSAEACCES",
	windows.WSAEADDRNOTAVAIL: "WSAEADDRNOTAVAIL",
}

// TrialBind binds a throwaway socket as req describes and closes it at
// once. It returns the Winsock error's name when the system refuses
// ("WSAEACCES" inside an excluded port range), "" when it accepts.
func TrialBind(req why.Request) (string, error) {
	addr := req.Address()
	family, sa := windows.AF_INET, windows.Sockaddr(&windows.SockaddrInet4{Port: int(req.Port), Addr: addr.As4()})
	if !addr.Is4() {
		family, sa = windows.AF_INET6, &windows.SockaddrInet6{Port: int(req.Port), Addr: addr.As16()}
	}
	typ, proto := windows.SOCK_STREAM, windows.IPPROTO_TCP
	if req.UDP {
		typ, proto = windows.SOCK_DGRAM, windows.IPPROTO_UDP
	}
	fd, err := windows.Socket(family, typ, proto)
	if err != nil {
		return "", fmt.Errorf("trial socket: %w", err)
	}
	defer windows.Closesocket(fd)
	if req.ReuseAddr {
		if err := windows.SetsockoptInt(fd, windows.SOL_SOCKET, windows.SO_REUSEADDR, 1); err != nil {
			return "", fmt.Errorf("trial socket options: %w", err)
		}
	}
	var errno windows.Errno
	switch err := windows.Bind(fd, sa); {
	case err == nil:
		return "", nil
	case errors.As(err, &errno):
		if name, ok := bindErrnos[errno]; ok {
			return name, nil
		}
		return fmt.Sprintf("error %d", uint32(errno)), nil
	default:
		return "", fmt.Errorf("trial bind: %w", err)
	}
}
