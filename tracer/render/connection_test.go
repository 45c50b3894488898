package render

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// sampleConnections covers every shape of connection line: a local
// connection with both ends through TIME_WAIT, a refused connect, a
// reset, one from elsewhere to a dual-stack server, one still open at the
// end, one older than the watch (roles unknown, then known by the listener
// of its server's port), IPv6 endpoints wider than the columns, and one in
// another network namespace than the watch's.
func sampleConnections() []tracer.Connection {
	t0 := time.Date(2026, 11, 24, 3, 13, 0, 123456789, time.UTC).UnixNano()
	addr := netip.MustParseAddr
	ms := func(n float64) int64 { return int64(n * 1e6) }
	states := func(pairs ...any) (out [tracer.MaxConnStates]tracer.StateTime, n uint8) {
		for i := 0; i < len(pairs); i += 2 {
			out[n] = tracer.StateTime{State: pairs[i].(tracer.State), DurationNs: pairs[i+1].(int64)}
			n++
		}
		return out, n
	}
	curl := tracer.Process{PID: 300, StartNs: 5_000_000_000, Comm: tracer.CommFrom("curl"), Thread: tracer.CommFrom("curl"), CgroupID: 77}
	nginx := tracer.Process{PID: 200, StartNs: 1_000_000_000, Comm: tracer.CommFrom("nginx"), Thread: tracer.CommFrom("nginx"), CgroupID: 88}
	client := tracer.ConnEnd{Traced: true, Family: tracer.FamilyIPv4, Addr: addr("127.0.0.1"), Port: 40000, Process: curl, OwnerVia: tracer.OwnerConnect}
	server := tracer.ConnEnd{Traced: true, Family: tracer.FamilyIPv4, Addr: addr("127.0.0.1"), Port: 8080, Process: nginx, OwnerVia: tracer.OwnerAccept}
	local := tracer.Connection{Proto: tracer.ProtoTCP, NetNS: 4026531833, Client: client, Server: server, RolesKnown: true, OpenSeen: true,
		StartNs: t0, ClosedNs: t0 + ms(16), EndNs: t0 + ms(60016), HandshakeNs: ms(0.069), ClosedFirst: tracer.CloserClient}
	local.Client.States, local.Client.NStates = states(tracer.StateSynSent, ms(0.069), tracer.StateEstablished, ms(8.5),
		tracer.StateFinWait1, ms(0.2), tracer.StateFinWait2, ms(7.2), tracer.StateTimeWait, ms(60000.1))
	local.Client.Reason = "expired"
	local.Server.States, local.Server.NStates = states(tracer.StateSynRecv, ms(0.05), tracer.StateEstablished, ms(8.6),
		tracer.StateCloseWait, ms(4), tracer.StateLastAck, ms(0.1))

	refused := tracer.Connection{Proto: tracer.ProtoTCP, NetNS: 4026531833, Client: client, RolesKnown: true, OpenSeen: true,
		StartNs: t0 + ms(100), ClosedNs: t0 + ms(100.052), EndNs: t0 + ms(100.052), HandshakeNs: -1, Err: 111}
	refused.Client.Port, refused.Client.Err = 40001, 111
	refused.Client.States, refused.Client.NStates = states(tracer.StateSynSent, ms(0.052))
	refused.Server = tracer.ConnEnd{Family: tracer.FamilyIPv4, Addr: addr("127.0.0.1"), Port: 9}

	reset := local
	reset.Client.Reason, reset.Client.Err, reset.Err, reset.ClosedFirst = "", 104, 104, tracer.CloserServer
	reset.Client.States, reset.Client.NStates = states(tracer.StateSynSent, ms(0.069), tracer.StateEstablished, ms(3))
	reset.Server.States, reset.Server.NStates = states(tracer.StateSynRecv, ms(0.05), tracer.StateEstablished, ms(3))
	reset.ClosedNs, reset.EndNs = t0+ms(3.07), t0+ms(3.07)

	java := tracer.Process{PID: 5150, StartNs: 2_000_000_000, Comm: tracer.CommFrom("java"), Thread: tracer.CommFrom("http-nio-8080-e"), CgroupID: 99}
	fromElsewhere := tracer.Connection{Proto: tracer.ProtoTCP, NetNS: 4026531833, RolesKnown: true, OpenSeen: true, StartNs: t0 + ms(200), ClosedNs: t0 + ms(260), EndNs: t0 + ms(260),
		HandshakeNs: ms(0.3), ClosedFirst: tracer.CloserServer,
		Client: tracer.ConnEnd{Family: tracer.FamilyIPv6, Addr: addr("::ffff:192.0.2.7"), Port: 51000},
		Server: tracer.ConnEnd{Traced: true, Family: tracer.FamilyIPv6, Addr: addr("::ffff:192.0.2.1"), Port: 8080, Process: java, OwnerVia: tracer.OwnerAccept}}
	fromElsewhere.Server.States, fromElsewhere.Server.NStates = states(tracer.StateSynRecv, ms(0.3), tracer.StateEstablished, ms(50),
		tracer.StateFinWait1, ms(0.4), tracer.StateFinWait2, ms(9.3), tracer.StateTimeWait, int64(-1))

	open := local
	open.Open, open.ClosedNs, open.EndNs, open.ClosedFirst, open.Client.Reason = true, 0, t0+ms(1500), tracer.CloserUnknown, ""
	open.Client.States, open.Client.NStates = states(tracer.StateSynSent, ms(0.069), tracer.StateEstablished, ms(1499.9))
	open.Server.States, open.Server.NStates = states(tracer.StateSynRecv, ms(0.05), tracer.StateEstablished, ms(1499.9))

	older := tracer.Connection{Proto: tracer.ProtoTCP, NetNS: 4026531833, StartNs: t0 + ms(300), ClosedNs: t0 + ms(310), EndNs: t0 + ms(310),
		HandshakeNs: -1, ClosedFirst: tracer.CloserClient, Client: server, Server: tracer.ConnEnd{Family: tracer.FamilyIPv4, Addr: addr("10.1.2.3"), Port: 33000}}
	older.Client.OwnerExited = true
	older.Client.States, older.Client.NStates = states(tracer.StateEstablished, int64(-1), tracer.StateFinWait1, ms(0.1))
	olderToListener := older
	olderToListener.RolesKnown, olderToListener.ClosedFirst = true, tracer.CloserServer
	olderToListener.Client, olderToListener.Server = older.Server, older.Client

	notAccepted := open
	notAccepted.Server.OwnerVia = tracer.OwnerListener

	v6 := local
	v6.Client.Family, v6.Client.Addr = tracer.FamilyIPv6, addr("2001:db8:85a3::8a2e:370:7334")
	v6.Server.Family, v6.Server.Addr = tracer.FamilyIPv6, addr("2001:db8::1")
	inContainer := local
	inContainer.NetNS = otherNetNS
	return []tracer.Connection{local, refused, reset, fromElsewhere, open, notAccepted, older, olderToListener, v6, inContainer}
}

func TestConnectionTextGolden(t *testing.T) {
	text := Text{Location: time.UTC, Connections: true, Labels: testLabels()}
	b := text.AppendHeader(nil)
	for _, c := range sampleConnections() {
		b = text.AppendConnection(b, &c)
	}
	golden(t, "connections.txt", b)
}

func TestConnectionJSONGolden(t *testing.T) {
	var b []byte
	for _, c := range sampleConnections() {
		b = AppendConnectionJSON(b, &c)
	}
	golden(t, "connections.json", b)
	for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		for _, field := range []string{"time", "type", "proto", "netns", "start", "lifetime_ns", "handshake_ns", "closed_first", "roles_known", "open", "client", "server"} {
			if _, ok := m[field]; !ok {
				t.Errorf("line %d lacks %q: %s", i, field, line)
			}
		}
		for _, end := range []string{"client", "server"} {
			e := m[end].(map[string]any)
			fields := []string{"traced", "family", "addr", "port"}
			if e["traced"] == true {
				fields = append(fields, "pid", "comm", "thread", "start_ns", "cgroup_id", "owner_via", "owner_exited", "states")
			}
			for _, field := range fields {
				if _, ok := e[field]; !ok {
					t.Errorf("line %d: %s lacks %q: %s", i, end, field, line)
				}
			}
		}
	}
}

func TestConnectionFormatAllocatesNothing(t *testing.T) {
	conns := sampleConnections()
	buf := make([]byte, 0, 8192)
	text := Text{Location: time.UTC, Connections: true}
	text.AppendHeader(nil)
	if n := testing.AllocsPerRun(100, func() {
		for i := range conns {
			buf = text.AppendConnection(buf[:0], &conns[i])
			buf = AppendConnectionJSON(buf[:0], &conns[i])
		}
	}); n != 0 {
		t.Errorf("formatting allocates %v times per batch", n)
	}
}
