package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

// TrialBind binds a throwaway socket as req describes and closes it at
// once: the kernel's own answer to "would this bind succeed now?". It
// returns the errno's name when the kernel refuses ("EADDRINUSE"), "" when
// it accepts, and an error when the trial itself could not be made.
//
// It binds from a thread named tracer.TrialBindThread, whose binds a
// running porttrace leaves out: its history would otherwise keep a holder
// that never was, and its failed binds count against the port.
func TrialBind(req why.Request) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var name [tracer.CommLen]byte
	if err := unix.Prctl(unix.PR_GET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err == nil {
		defer unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0)
	}
	trial := tracer.TrialBindThread
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&trial[0])), 0, 0, 0); err != nil {
		return "", fmt.Errorf("naming the trial's thread: %w", err)
	}
	return trialBind(req)
}

func trialBind(req why.Request) (string, error) {
	addr := req.Address()
	family, sa, err := sockaddr(addr, req.Port)
	if err != nil {
		return "", err
	}
	typ := unix.SOCK_STREAM
	if req.UDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("trial socket: %w", err)
	}
	defer unix.Close(fd)
	type sockopt struct {
		level, name int
		on          bool
	}
	opts := []sockopt{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, req.ReuseAddr},
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, req.ReusePort},
	}
	if family == unix.AF_INET6 {
		opts = append(opts, sockopt{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, req.V6Only})
	}
	for _, o := range opts {
		v := 0
		if o.on {
			v = 1
		}
		if err := unix.SetsockoptInt(fd, o.level, o.name, v); err != nil {
			return "", fmt.Errorf("trial socket options: %w", err)
		}
	}
	var errno unix.Errno
	switch err := unix.Bind(fd, sa); {
	case err == nil:
		return "", nil
	case errors.As(err, &errno):
		return unix.ErrnoName(errno), nil
	default:
		return "", fmt.Errorf("trial bind: %w", err)
	}
}

func sockaddr(addr netip.Addr, port uint16) (int, unix.Sockaddr, error) {
	if addr.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(port), Addr: addr.As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: int(port), Addr: addr.As16()}
	if zone := addr.Zone(); zone != "" {
		ifi, err := net.InterfaceByName(zone)
		if err != nil {
			return 0, nil, fmt.Errorf("scope %%%s: %w", zone, err)
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return unix.AF_INET6, sa, nil
}

// ReadSystem reads the settings of porttrace's network namespace that
// decide how a bind of port is treated.
func ReadSystem(port uint16) (why.System, error) {
	var sys why.System
	start, err := readSysctl("net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return sys, err
	}
	sys.UnprivilegedPortStart, err = strconv.Atoi(start)
	if err != nil {
		return sys, fmt.Errorf("reading ip_unprivileged_port_start %q: %w", start, err)
	}
	ephemeral, err := ephemeralPorts()
	if err != nil {
		return sys, err
	}
	sys.EphemeralLow, sys.EphemeralHigh = int(ephemeral.Low), int(ephemeral.High)
	reserved, err := readSysctl("net/ipv4/ip_local_reserved_ports")
	if err != nil {
		return sys, err
	}
	sys.Reserved, err = portInList(reserved, port)
	return sys, err
}

// ephemeralPorts is net.ipv4.ip_local_port_range of porttrace's network
// namespace: the ports the kernel picks a connect's local port from.
func ephemeralPorts() (snapshot.PortRange, error) {
	var r snapshot.PortRange
	rng, err := readSysctl("net/ipv4/ip_local_port_range")
	if err != nil {
		return r, err
	}
	if _, err := fmt.Sscan(rng, &r.Low, &r.High); err != nil {
		return r, fmt.Errorf("reading ip_local_port_range %q: %w", rng, err)
	}
	return r, nil
}

// BindV6OnlyDefault is net.ipv6.bindv6only: whether an IPv6 socket takes
// no IPv4 unless it says otherwise.
func BindV6OnlyDefault() (bool, error) {
	v, err := readSysctl("net/ipv6/bindv6only")
	return v == "1", err
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", strings.ReplaceAll(name, "/", "."), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// portInList reads a sysctl port list such as "8080,9000-9010".
func portInList(list string, port uint16) (bool, error) {
	if list == "" {
		return false, nil
	}
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err := errors.Join(err1, err2); err != nil {
			return false, fmt.Errorf("reading port list %q: %w", list, err)
		}
		if int(port) >= l && int(port) <= h {
			return true, nil
		}
	}
	return false, nil
}
