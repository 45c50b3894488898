package windows

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

// TestTrialBind: a listener makes a bind to its address fail, its close
// lets it succeed.
func TestTrialBind(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr).AddrPort()
	req := why.Request{Port: addr.Port(), Addr: addr.Addr()}
	if errno, err := TrialBind(req); errno != "WSAEADDRINUSE" || err != nil {
		t.Errorf("bind over a listener: %q, %v; want WSAEADDRINUSE", errno, err)
	}
	l.Close()
	if errno, err := TrialBind(req); errno != "" || err != nil {
		t.Errorf("bind after the close: %q, %v; want success", errno, err)
	}
}

// TestReadSystemAsksNetsh: a bind refused with WSAEACCES makes why ask
// netsh for the excluded port ranges and say whether the port is in one.
func TestReadSystemAsksNetsh(t *testing.T) {
	req := why.Request{Port: 50051}
	sys := ReadSystem(context.Background(), req, &snapshot.PortReport{Port: req.Port}, "WSAEACCES")
	if len(sys.Notes) != 1 || !strings.Contains(sys.Notes[0], "excluded port range") || strings.Contains(sys.Notes[0], "unknown") {
		t.Errorf("notes %q, want one saying whether port %d is in an excluded range", sys.Notes, req.Port)
	}
	t.Log(sys.Notes)
}
