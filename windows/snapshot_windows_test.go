package windows

import (
	"net"
	"net/netip"
	"os"
	"testing"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer"
)

type wantRow struct {
	proto tracer.Proto
	local netip.AddrPort
	state tracer.State
}

func findRow(rows []Row, w wantRow) (Row, bool) {
	for _, r := range rows {
		if r.Proto == w.proto && r.Local == w.local {
			return r, true
		}
	}
	return Row{}, false
}

func listenTCP(t *testing.T, network, addr string) (wantRow, bool) {
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Logf("no %s listener: %v", network, err)
		return wantRow{}, false
	}
	t.Cleanup(func() { l.Close() })
	return wantRow{tracer.ProtoTCP, l.Addr().(*net.TCPAddr).AddrPort(), tracer.StateListen}, true
}

// bindUDP4 binds a UDP socket with plain Winsock calls: package net's UDP
// set-up uses an ioctl that wine lacks.
func bindUDP4(t *testing.T) wantRow {
	s, err := xwin.Socket(xwin.AF_INET, xwin.SOCK_DGRAM, xwin.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { xwin.Closesocket(s) })
	if err := xwin.Bind(s, &xwin.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := xwin.Getsockname(s)
	if err != nil {
		t.Fatal(err)
	}
	in4 := sa.(*xwin.SockaddrInet4)
	return wantRow{tracer.ProtoUDP, netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)), tracer.StateUnknown}
}

func TestSnapshotFindsOurSockets(t *testing.T) {
	tcp4, ok := listenTCP(t, "tcp4", "127.0.0.1:0")
	if !ok {
		t.Fatal("cannot listen on 127.0.0.1")
	}
	want := []wantRow{tcp4, bindUDP4(t)}
	if tcp6, ok := listenTCP(t, "tcp6", "[::1]:0"); ok {
		want = append(want, tcp6)
	}

	rows, err := Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		row, ok := findRow(rows, w)
		if !ok {
			t.Errorf("%v %v not in the %d rows", w.proto, w.local, len(rows))
			continue
		}
		if row.State != w.state {
			t.Errorf("%v %v: state %v, want %v", w.proto, w.local, row.State, w.state)
		}
		// Wine leaves the pid 0, so it is only reported.
		t.Logf("%v %v: pid %d (ours %d)", w.proto, w.local, row.PID, os.Getpid())
	}
}
