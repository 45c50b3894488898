package why

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

func sock(proto tracer.Proto, state tracer.State, local string, pids ...uint32) snapshot.PortSocket {
	l := netip.MustParseAddrPort(local)
	return snapshot.PortSocket{Proto: proto, State: state, Local: l, PIDs: pids}
}

func TestConflicts(t *testing.T) {
	listener4 := sock(tracer.ProtoTCP, tracer.StateListen, "0.0.0.0:8080", 1)
	loopback := sock(tracer.ProtoTCP, tracer.StateListen, "127.0.0.1:8080", 1)
	dual := sock(tracer.ProtoTCP, tracer.StateListen, "[::]:8080", 1)
	v6only := dual
	v6only.V6Only = true
	mptcp := sock(tracer.ProtoMPTCP, tracer.StateListen, "0.0.0.0:8080", 1)
	bound := sock(tracer.ProtoTCP, tracer.StateClose, "0.0.0.0:8080", 1)
	tw := sock(tracer.ProtoTCP, tracer.StateTimeWait, "127.0.0.1:8080")
	twReuse := tw
	twReuse.Reuse = snapshot.Reuse{Known: true, Addr: true}
	conn := sock(tracer.ProtoTCP, tracer.StateEstablished, "127.0.0.1:8080", 1)
	udp := sock(tracer.ProtoUDP, tracer.StateClose, "0.0.0.0:8080", 1)
	group := listener4
	group.Reuse = snapshot.Reuse{Known: true, Port: true, UID: 33}
	other := sock(tracer.ProtoTCP, tracer.StateListen, "0.0.0.0:9090", 1)
	mapped := sock(tracer.ProtoTCP, tracer.StateListen, "[::ffff:127.0.0.1]:8080", 1)

	v4 := Request{Port: 8080}
	lo := Request{Port: 8080, Addr: netip.MustParseAddr("127.0.0.1")}
	lo2 := Request{Port: 8080, Addr: netip.MustParseAddr("127.11.22.33")}
	any6 := Request{Port: 8080, Addr: netip.IPv6Unspecified()}
	any6only := Request{Port: 8080, Addr: netip.IPv6Unspecified(), V6Only: true}
	one6 := Request{Port: 8080, Addr: netip.MustParseAddr("::1")}
	reuseaddr := Request{Port: 8080, Addr: netip.MustParseAddr("127.0.0.1"), ReuseAddr: true}
	reuseport33 := Request{Port: 8080, ReusePort: true, UID: 33}
	reuseport0 := Request{Port: 8080, ReusePort: true}
	udpReq := Request{Port: 8080, UDP: true}
	for _, tc := range []struct {
		name string
		req  Request
		s    snapshot.PortSocket
		want string // "" for no conflict, else a word of the reason
	}{
		{"wildcard request covers a loopback listener", v4, loopback, "0.0.0.0 covers 127.0.0.1"},
		{"loopback request inside a wildcard listener", lo, listener4, "0.0.0.0 covers 127.0.0.1"},
		{"127.0.0.1 and 127.11.22.33 are different addresses", lo2, loopback, ""},
		{"dual-stack listener covers IPv4", lo, dual, "without IPV6_V6ONLY covers every IPv4 address"},
		{"V6ONLY listener leaves IPv4 free", lo, v6only, ""},
		{"IPv6 request against an IPv4 listener: [::] dual-stack takes IPv4 too", any6, listener4, "without IPV6_V6ONLY"},
		{"IPv6-only request leaves IPv4 listeners alone", any6only, listener4, ""},
		{"::1 against 127.0.0.1", one6, loopback, ""},
		{"MPTCP listener blocks a TCP bind", v4, mptcp, "a listener"},
		{"bound, not listening", v4, bound, "not listening"},
		{"TIME_WAIT without SO_REUSEADDR", lo, tw, "TIME_WAIT"},
		{"TIME_WAIT with SO_REUSEADDR on both", reuseaddr, twReuse, ""},
		{"TIME_WAIT whose connection had no SO_REUSEADDR", reuseaddr, tw, "TIME_WAIT"},
		{"a connection holds the port", lo, conn, "holds the port"},
		{"UDP does not block TCP", v4, udp, ""},
		{"TCP does not block UDP", udpReq, listener4, ""},
		{"UDP against UDP", udpReq, udp, "UDP socket"},
		{"SO_REUSEPORT group of the same uid", reuseport33, group, ""},
		{"SO_REUSEPORT group of another uid", reuseport0, group, "join its group"},
		{"another port", v4, other, ""},
		{"an IPv4-mapped listener reads as IPv4, as who shows it", lo, mapped, "a listener on 127.0.0.1:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, unblock, conflict := conflicts(tc.req, &tc.s)
			if conflict != (tc.want != "") {
				t.Fatalf("conflict %v (%q), want %v", conflict, reason, tc.want != "")
			}
			if !conflict {
				return
			}
			if !strings.Contains(reason+" "+strings.Join(unblock, " "), tc.want) {
				t.Errorf("reason %q, unblock %q: want %q in them", reason, unblock, tc.want)
			}
			if len(unblock) == 0 {
				t.Error("a blocker with nothing to unblock it")
			}
		})
	}
}

// TestJudgeTrustsTheTrial: where the trial bind succeeded, sockets the
// rules cannot clear (options unknown) are shared, not blockers; where it
// failed with nothing to explain it, the verdict says so.
func TestJudgeTrustsTheTrial(t *testing.T) {
	report := &snapshot.PortReport{Port: 8080, Sockets: []snapshot.PortSocket{
		sock(tracer.ProtoTCP, tracer.StateListen, "0.0.0.0:8080", 1),
	}, Processes: map[uint32]*proc.Process{1: {Identity: proc.Identity{PID: 1}, Name: "server"}}}
	req := Request{Port: 8080, ReusePort: true}
	if v := Judge(req, report, System{}, ""); !v.Free || len(v.Blockers) != 0 || len(v.Sharing) != 1 {
		t.Errorf("trial succeeded: got %+v, want free, sharing the listener", v)
	}
	v := Judge(req, report, System{}, "EADDRINUSE")
	if v.Free || len(v.Blockers) != 1 || v.Blockers[0].Owner == nil || v.Blockers[0].Owner.Name != "server" {
		t.Errorf("trial failed: got %+v, want the listener as blocker, owned by server", v)
	}
	empty := &snapshot.PortReport{Port: 8080}
	v = Judge(Request{Port: 8080}, empty, System{}, "EADDRINUSE")
	if len(v.Notes) != 1 || !strings.Contains(v.Notes[0], "no socket porttrace can see explains it") {
		t.Errorf("unexplained refusal: notes %q", v.Notes)
	}
}

func TestNotes(t *testing.T) {
	sys := System{UnprivilegedPortStart: 1024, EphemeralLow: 32768, EphemeralHigh: 60999}
	for _, tc := range []struct {
		port     uint16
		reserved bool
		want     string
	}{
		{80, false, "CAP_NET_BIND_SERVICE"},
		{40000, false, "outgoing connections may take it"},
		{40000, true, "reserved"},
		{8080, false, ""},
	} {
		sys.Reserved = tc.reserved
		v := Judge(Request{Port: tc.port}, &snapshot.PortReport{Port: tc.port}, sys, "")
		got := strings.Join(v.Notes, "\n")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("port %d reserved %v: notes %q, want %q", tc.port, tc.reserved, got, tc.want)
		}
	}
}

// TestPlatformNotes: the platform's notes follow the verdict's own.
func TestPlatformNotes(t *testing.T) {
	sys := System{Notes: []string{"port 50000 is inside an excluded port range"}}
	v := Judge(Request{Port: 50000}, &snapshot.PortReport{Port: 50000}, sys, "EADDRINUSE")
	if len(v.Notes) != 2 || !strings.Contains(v.Notes[0], "no socket porttrace can see") || v.Notes[1] != sys.Notes[0] {
		t.Errorf("notes %q, want the unexplained refusal, then the platform's", v.Notes)
	}
}
