package linux

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"

	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serverClosesFirst makes one connection from clientPort to the listener in
// which the server closes first, so the server's end, on the listener's
// port, goes through TIME_WAIT.
func serverClosesFirst(t *testing.T, l net.Listener, clientPort int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: clientPort}}
	d.Control = func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
	}
	c, err := d.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	io.Copy(io.Discard, c)
	c.Close()
}

func timeWaitEnd(recs []tracer.Record, port uint16, clientPort int) *tracer.Record {
	for i := range recs {
		r := &recs[i]
		if r.SPort == port && int(r.DPort) == clientPort && r.Old == tracer.StateTimeWait && r.New == tracer.StateClose {
			return r
		}
	}
	return nil
}

func listenTCP4(t *testing.T) (net.Listener, uint16) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, uint16(l.Addr().(*net.TCPAddr).Port)
}

// connectTo makes one loopback connection to l: its client end and the end
// l accepted, both closed when the test ends if not before.
func connectTo(t *testing.T, l net.Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial(l.Addr().Network(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// timeWaitSetup traces a fresh port and makes one connection to it from a
// chosen client port in which the server closes first.
func timeWaitSetup(t *testing.T) (net.Listener, uint16, int, *recorder) {
	needPrivileges(t)
	l, port := listenTCP4(t)
	clientPort := int(freePort(t, "127.0.0.1"))
	rec, _ := trace(t, tracer.Config{Ports: tracer.Ports{port}})
	serverClosesFirst(t, l, clientPort)
	return l, port, clientPort, rec
}

// TestKernelTimeWaitKilledEarly: a new SYN on a TIME_WAIT socket's 4-tuple
// makes the kernel kill it at once, which porttrace reports as killed with
// the time it spent there.
func TestKernelTimeWaitKilledEarly(t *testing.T) {
	l, port, clientPort, rec := timeWaitSetup(t)
	waitFor(t, rec, "the server's end in TIME_WAIT", func(recs []tracer.Record) bool {
		for _, r := range recs {
			if r.SPort == port && int(r.DPort) == clientPort && r.New == tracer.StateTimeWait {
				return true
			}
		}
		return false
	})
	serverClosesFirst(t, l, clientPort)
	recs := waitFor(t, rec, "TIME_WAIT -> CLOSE", func(recs []tracer.Record) bool { return timeWaitEnd(recs, port, clientPort) != nil })
	end := timeWaitEnd(recs, port, clientPort)
	if end.Reason != correlate.ReasonKilled || end.DurationNs <= 0 || end.DurationNs > int64(10*time.Second) || end.OwnerVia != tracer.OwnerAccept {
		t.Fatalf("TIME_WAIT end: %+v, want killed after a short while, owned by the accepting process", *end)
	}
}

// TestKernelSlowTimeWaitExpires waits out Linux's fixed 60 s TIME_WAIT.
func TestKernelSlowTimeWaitExpires(t *testing.T) {
	_, port, clientPort, rec := timeWaitSetup(t)

	deadline := time.Now().Add(75 * time.Second)
	for timeWaitEnd(rec.records(), port, clientPort) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no TIME_WAIT -> CLOSE after 75 s:\n%s", dump(rec.records()))
		}
		time.Sleep(500 * time.Millisecond)
	}
	end := timeWaitEnd(rec.records(), port, clientPort)
	if end.Reason != correlate.ReasonExpired || end.DurationNs < int64(59*time.Second) || end.DurationNs > int64(70*time.Second) {
		t.Fatalf("TIME_WAIT end: %+v, want expired after about 60 s", *end)
	}
	t.Logf("TIME_WAIT lasted %v", time.Duration(end.DurationNs))
}
