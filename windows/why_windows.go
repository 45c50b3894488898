package windows

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer/snapshot"
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

// netshTimeout bounds the wait for netsh, which answers within a second.
const netshTimeout = 10 * time.Second

// ReadSystem says what Windows knows about the port that its socket tables
// cannot: for a bind refused with WSAEACCES, the excluded port range it is
// in; for one refused with WSAEADDRINUSE and nothing in the tables, where
// the blocker hides; what the System process serves on it. trial is
// TrialBind's answer for req, report the port's snapshot. A netsh that
// cannot run costs a note, not the verdict.
func ReadSystem(ctx context.Context, req why.Request, report *snapshot.PortReport, trial string) why.System {
	var ranges []PortRange
	var err error
	if trial == "WSAEACCES" {
		ranges, err = ExcludedRanges(ctx, req)
	}
	return why.System{Notes: append(refusalNotes(req, report, trial, ranges, err), kernelNotes(report)...)}
}

// ExcludedRanges lists the port ranges Windows excludes for the request's
// family and protocol, from `netsh int ipv4 show excludedportrange`.
// Windows has no documented call that lists them: iphlpapi's
// LookupPersistentTcpPortReservation finds one persistent reservation by
// its exact range, and the ranges winnat reserves while it runs are not
// persistent.
func ExcludedRanges(ctx context.Context, req why.Request) ([]PortRange, error) {
	dir, err := windows.GetSystemDirectory()
	if err != nil {
		return nil, fmt.Errorf("finding netsh: %w", err)
	}
	family, proto := netshScope(req)
	ctx, cancel := context.WithTimeout(ctx, netshTimeout)
	defer cancel()
	// netsh from the system directory, never one a PATH puts first.
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "netsh.exe"), "interface", family, "show", "excludedportrange", "protocol="+proto).Output()
	if err != nil {
		return nil, fmt.Errorf("netsh int %s show excludedportrange: %w", family, err)
	}
	return parseExcludedRanges(string(out)), nil
}
