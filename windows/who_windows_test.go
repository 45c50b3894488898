package windows

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// TestWhoBothSides: a loopback connection shows on both sides of the
// port: the listener and the accepted end serve on it, the client end
// connects to it.
func TestWhoBothSides(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	listener, client := l.Addr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()
	r, err := Who(listener.Port())
	if err != nil {
		t.Fatal(err)
	}
	find := func(local, remote netip.AddrPort, state tracer.State) *snapshot.PortSocket {
		for i, s := range r.Sockets {
			if s.Local == local && (remote == netip.AddrPort{} || s.Remote == remote) && s.State == state {
				return &r.Sockets[i]
			}
		}
		t.Errorf("no %v socket %v -> %v in %+v", state, local, remote, r.Sockets)
		return nil
	}
	serving := []*snapshot.PortSocket{find(listener, netip.AddrPort{}, tracer.StateListen), find(listener, client, tracer.StateEstablished)}
	connecting := find(client, listener, tracer.StateEstablished)
	for _, s := range append(serving, connecting) {
		if s == nil {
			continue
		}
		if r.Serves(s) != (s != connecting) {
			t.Errorf("%v -> %v: serves %v", s.Local, s.Remote, r.Serves(s))
		}
		// Wine reports no pids: what a table names is checked, not that
		// it names one.
		for _, pid := range s.PIDs {
			exe, _ := os.Executable()
			if p := r.Processes[pid]; p == nil || pid == uint32(os.Getpid()) && !strings.EqualFold(p.Name, filepath.Base(exe)) {
				t.Errorf("pid %d holds %v, described as %+v", pid, s.Local, p)
			}
		}
	}
}
