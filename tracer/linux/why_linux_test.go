package linux

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/why"
)

// judgeNow runs why as the command does: a snapshot, the namespace's
// settings and a trial bind.
func judgeNow(t *testing.T, req why.Request) why.Verdict {
	t.Helper()
	report, err := Who(req.Port)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := ReadSystem(req.Port)
	if err != nil {
		t.Fatal(err)
	}
	trial, err := TrialBind(req)
	if err != nil {
		t.Fatal(err)
	}
	return why.Judge(req, report, sys, trial)
}

// realBind binds a socket the way a C server would, with SO_REUSEADDR as
// asked, independently of TrialBind, and reports whether it succeeded.
func realBind(t *testing.T, addr string, port uint16, reuseAddr bool) bool {
	t.Helper()
	a := netip.MustParseAddr(addr)
	var family int
	var sa unix.Sockaddr
	if a.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if reuseAddr {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	return unix.Bind(fd, sa) == nil
}

// TestKernelWhyVerdicts: each kind of blocker, built for real on loopback,
// is named with its owner, and every verdict agrees with a bind made apart
// from porttrace.
func TestKernelWhyVerdicts(t *testing.T) {
	needPrivileges(t)
	me := uint32(os.Getpid())
	check := func(t *testing.T, req why.Request, wantFree bool, wantReason string) {
		t.Helper()
		v := judgeNow(t, req)
		if real := realBind(t, req.Address().String(), req.Port, req.ReuseAddr); real != v.Free || v.Free != wantFree {
			t.Fatalf("%+v: verdict free=%v (%s), a real bind free=%v, want %v", req, v.Free, v.Errno, real, wantFree)
		}
		if wantFree {
			return
		}
		for _, b := range v.Blockers {
			if strings.Contains(b.Reason, wantReason) {
				if b.Socket.State != tracer.StateTimeWait && (b.Owner == nil || b.Owner.PID != me) {
					t.Errorf("blocker %q: owner %+v, want this test (%d)", b.Reason, b.Owner, me)
				}
				return
			}
		}
		t.Errorf("%+v: no blocker says %q among %+v", req, wantReason, v.Blockers)
	}

	t.Run("loopback listener", func(t *testing.T) {
		// Free on every address, [::1] included, which the last check
		// wants free: a port free on 127.0.0.1 alone may be held on [::1]
		// by an earlier test's connection in TIME_WAIT (seen in a VM).
		port := freePort(t, "::")
		l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(int(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		check(t, why.Request{Port: port}, false, "a listener on 127.0.0.1")
		check(t, why.Request{Port: port, Addr: netip.MustParseAddr("127.11.22.33")}, true, "")
		check(t, why.Request{Port: port, Addr: netip.MustParseAddr("::1"), V6Only: true}, true, "")
	})
	t.Run("dual-stack listener", func(t *testing.T) {
		port := freePort(t, "::")
		l, err := net.Listen("tcp", "[::]:"+strconv.Itoa(int(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		check(t, why.Request{Port: port, Addr: netip.MustParseAddr("127.0.0.1")}, false, "without IPV6_V6ONLY covers every IPv4 address")
	})
	t.Run("bound, not listening", func(t *testing.T) {
		port := freePort(t, "127.0.0.1")
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		check(t, why.Request{Port: port}, false, "not listening")
	})
	t.Run("TIME_WAIT", func(t *testing.T) {
		port := freePort(t, "127.0.0.1")
		leaveTimeWait(t, port)
		check(t, why.Request{Port: port, Addr: netip.MustParseAddr("127.0.0.1")}, false, "TIME_WAIT")
		// Go's listener set SO_REUSEADDR, and the accepted socket kept it.
		check(t, why.Request{Port: port, Addr: netip.MustParseAddr("127.0.0.1"), ReuseAddr: true}, true, "")
	})
}

// TestKernelDestroyTimeWait: SOCK_DESTROY takes down the TIME_WAIT socket
// that blocked a bind, and the bind then succeeds.
func TestKernelDestroyTimeWait(t *testing.T) {
	needPrivileges(t)
	port := freePort(t, "127.0.0.1")
	leaveTimeWait(t, port)
	if realBind(t, "127.0.0.1", port, false) {
		t.Fatal("no TIME_WAIT socket blocks the port")
	}
	res, err := DestroyTimeWait(port)
	release := kernelRelease(t)
	if kernelBefore(release, 6, 0) {
		// TIME_WAIT sockets cannot be destroyed yet: they must be left,
		// and said to be left.
		if err == nil && (res.Found != 1 || res.Remaining != 1) {
			t.Errorf("Linux %s: got %+v, want the one TIME_WAIT socket found and remaining", release, res)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Found != 1 || res.Remaining != 0 {
		t.Errorf("got %+v, want one found, none remaining", res)
	}
	if !realBind(t, "127.0.0.1", port, false) {
		t.Error("the port is still blocked after SOCK_DESTROY")
	}
}

// kernelBefore says whether a release string ("5.10.0-30-cloud-amd64") is
// older than major.minor.
func kernelBefore(release string, major, minor int) bool {
	var ma, mi int
	fmt.Sscanf(release, "%d.%d", &ma, &mi)
	return ma < major || ma == major && mi < minor
}

// leaveTimeWait leaves on port a TIME_WAIT socket no process holds: a
// connection the server closed first, from a listener closed since (Go's
// listeners set SO_REUSEADDR, and the accepted socket keeps it).
func leaveTimeWait(t *testing.T, port uint16) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	serverClosesFirst(t, l, 0)
	l.Close()
}

// TestKernelTrialBindsNotTraced: why's and free's trial binds, refused or
// accepted, make no bind line (history kept a holder for each that never
// was, and counted the refused ones as the port's failed binds); a plain
// bind after them does.
func TestKernelTrialBindsNotTraced(t *testing.T) {
	needPrivileges(t)
	rec, _ := trace(t, tracer.Config{})
	held, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := uint16(held.Addr().(*net.TCPAddr).Port)
	freePort := freePort(t, "127.0.0.1")
	for port, want := range map[uint16]string{heldPort: "EADDRINUSE", freePort: ""} {
		if got, err := TrialBind(why.Request{Addr: netip.MustParseAddr("127.0.0.1"), Port: port}); err != nil || got != want {
			t.Fatalf("trial bind of %d: %q, %v; want %q", port, got, err, want)
		}
	}
	marker, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close()
	markerPort := uint16(marker.Addr().(*net.TCPAddr).Port)
	recs := waitFor(t, rec, "the marker's bind", func(recs []tracer.Record) bool {
		return slices.ContainsFunc(recs, func(r tracer.Record) bool { return r.Type == tracer.RecordBind && r.SPort == markerPort })
	})
	// Each port had one bind of this test's own before the trials: the
	// listener's, and the one that found the free port.
	binds := map[uint16][]string{}
	for _, r := range recs {
		if r.Type == tracer.RecordBind && (r.SPort == heldPort || r.SPort == freePort) {
			binds[r.SPort] = append(binds[r.SPort], fmt.Sprintf("error %d thread %q", r.Err, r.Thread))
		}
	}
	for _, port := range []uint16{heldPort, freePort} {
		if len(binds[port]) != 1 {
			t.Errorf("port %d: bind lines %q, want the test's own one alone", port, binds[port])
		}
	}
}
