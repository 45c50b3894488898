package render

import (
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"

	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
)

// whoCase is one hand-built report; each has its own port, so a line of
// who.json says which case it is.
type whoCase struct {
	name   string
	report *snapshot.PortReport
}

// initNetNS is the initial network namespace's inode number.
const initNetNS = 4026531840

// portSocket builds a socket of the initial network namespace from
// "addr:port" strings; remote "" is the wildcard peer of a listener or a
// bound socket.
func portSocket(proto tracer.Proto, state tracer.State, local, remote string, pids ...uint32) snapshot.PortSocket {
	l := netip.MustParseAddrPort(local)
	s := snapshot.PortSocket{Proto: proto, Family: tracer.FamilyIPv4, State: state, Local: l, NetNS: initNetNS, PIDs: pids}
	if l.Addr().Is6() {
		s.Family = tracer.FamilyIPv6
	}
	if remote == "" {
		s.Remote = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		if s.Family == tracer.FamilyIPv6 {
			s.Remote = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
	} else {
		s.Remote = netip.MustParseAddrPort(remote)
	}
	return s
}

func procs(ps ...*proc.Process) map[uint32]*proc.Process {
	m := map[uint32]*proc.Process{}
	for _, p := range ps {
		m[p.PID] = p
	}
	return m
}

// timeWait is a TIME_WAIT socket no process holds, with leftNs on its
// timer and the owner a running porttrace saw, if any.
func timeWait(local, remote string, leftNs int64, seen *proc.Process) snapshot.PortSocket {
	s := portSocket(tracer.ProtoTCP, tracer.StateTimeWait, local, remote)
	s.TimerNs, s.Seen = leftNs, seen
	return s
}

// sampleReports covers every shape of who report: a free port, listeners
// of each scope, a pre-fork server and a SO_REUSEPORT group, connections
// summarised by state, UDP, sockets no process holds, notes, and names
// written to make trouble.
func sampleReports() []whoCase {
	const (
		tcp = tracer.ProtoTCP
		udp = tracer.ProtoUDP
	)
	nginx := func(pid uint32) *proc.Process {
		return &proc.Process{Identity: proc.Identity{PID: pid}, Name: "nginx", User: "www-data", Exe: "/usr/sbin/nginx", Cmdline: "nginx: worker process",
			PPID: 700, Ancestors: []proc.Ancestor{{PID: 700, Name: "nginx"}, {PID: 1, Name: "systemd"}}, RSSBytes: 5 << 20,
			StartTime: whoNow.Add(-26 * time.Hour), Cgroup: proc.Cgroup{Path: "/system.slice/nginx.service", Unit: "nginx.service"}}
	}
	v6only := func(s snapshot.PortSocket) snapshot.PortSocket { s.V6Only = true; return s }

	// One redis with more connections per state than the summary names.
	redis := &proc.Process{Identity: proc.Identity{PID: 2100}, Name: "redis-server", User: "redis", Exe: "/usr/bin/redis-server", Cmdline: "/usr/bin/redis-server 127.0.0.1:6379"}
	many := []snapshot.PortSocket{portSocket(tcp, tracer.StateListen, "127.0.0.1:6379", "", 2100)}
	for i := range 7 {
		many = append(many, portSocket(tcp, tracer.StateEstablished, "127.0.0.1:6379", fmt.Sprintf("127.0.0.1:%d", 50000+i), 2100))
	}
	for i := range 3 { // as many as the summary names: no "and N more"
		many = append(many, portSocket(tcp, tracer.StateCloseWait, "127.0.0.1:6379", fmt.Sprintf("127.0.0.1:%d", 51000+i), 2100))
	}
	for i := range 4 { // one more than it names
		many = append(many, portSocket(tcp, tracer.StateFinWait1, "127.0.0.1:6379", fmt.Sprintf("127.0.0.1:%d", 52000+i), 2100))
	}
	many = append(many, portSocket(tcp, tracer.StateLastAck, "127.0.0.1:6379", "127.0.0.1:53000", 2100))
	// States arrive out of order; the summary sorts them.
	many[1], many[len(many)-1] = many[len(many)-1], many[1]

	seen := &proc.Process{Identity: proc.Identity{PID: 4242}, Name: "curl", User: "alice", Exe: "/usr/bin/curl", Cmdline: "curl http://10.0.0.1:8080/"}

	// Names written to make trouble: C0 controls, an ANSI clear screen, a
	// title-setting OSC, a C1 CSI (U+009B), invalid UTF-8, and the HTML
	// characters encoding/json escapes.
	evil := &proc.Process{
		Identity: proc.Identity{PID: 6666}, Name: "ev\x1b[2Jil\a\x7f", User: "mallory",
		Exe:     "/tmp/x\nport 22: no process holds it",
		Cmdline: "sh -c \x1b]0;pwned\x07echo\tok\r\n\u009b31mred\xff <a&b>",
	}

	return []whoCase{
		{"free port: no sockets", &snapshot.PortReport{Port: 8081, Processes: procs()}},
		{"one listener on 0.0.0.0", &snapshot.PortReport{
			Port:      8080,
			Sockets:   []snapshot.PortSocket{portSocket(tcp, tracer.StateListen, "0.0.0.0:8080", "", 1234)},
			Processes: procs(&proc.Process{Identity: proc.Identity{PID: 1234}, Name: "python3", User: "alice", Exe: "/usr/bin/python3.11", Cmdline: "python3 -m http.server 8080"}),
		}},
		{"dual-stack [::] listener with a v4-mapped peer", &snapshot.PortReport{
			Port: 443,
			Sockets: []snapshot.PortSocket{
				portSocket(tcp, tracer.StateListen, "[::]:443", "", 880),
				portSocket(tcp, tracer.StateEstablished, "[::ffff:192.0.2.10]:443", "[::ffff:198.51.100.7]:61000", 880),
				portSocket(tcp, tracer.StateEstablished, "[2001:db8::10]:443", "[2001:db8:ffff::abcd]:61001", 880),
			},
			Processes: procs(&proc.Process{Identity: proc.Identity{PID: 880}, Name: "caddy", User: "caddy", Exe: "/usr/bin/caddy", Cmdline: "/usr/bin/caddy run --environ --config /etc/caddy/Caddyfile"}),
		}},
		{"0.0.0.0 and a V6Only [::] listener, held by a master and its forked workers, in descriptor order", &snapshot.PortReport{
			Port: 80,
			Sockets: []snapshot.PortSocket{
				// The kernel's tables list the later descriptor first.
				withFD(v6only(portSocket(tcp, tracer.StateListen, "[::]:80", "", 700, 701, 702)), 7),
				withFD(portSocket(tcp, tracer.StateListen, "0.0.0.0:80", "", 700, 701, 702), 6),
			},
			Processes: procs(
				&proc.Process{Identity: proc.Identity{PID: 700}, Name: "nginx", User: "root", Exe: "/usr/sbin/nginx", Cmdline: "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;"},
				nginx(701), nginx(702)),
		}},
		{"loopback listener", &snapshot.PortReport{
			Port:      5432,
			Sockets:   []snapshot.PortSocket{portSocket(tcp, tracer.StateListen, "127.0.0.1:5432", "", 1500), portSocket(tcp, tracer.StateListen, "[::1]:5432", "", 1500)},
			Processes: procs(&proc.Process{Identity: proc.Identity{PID: 1500}, Name: "postgres", User: "postgres", Exe: "/usr/lib/postgresql/15/bin/postgres", Cmdline: "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main"}),
		}},
		{"SO_REUSEPORT group", &snapshot.PortReport{
			Port: 9000,
			Sockets: []snapshot.PortSocket{
				portSocket(tcp, tracer.StateListen, "0.0.0.0:9000", "", 3003),
				portSocket(tcp, tracer.StateListen, "0.0.0.0:9000", "", 3001),
				portSocket(tcp, tracer.StateListen, "0.0.0.0:9000", "", 3002),
				portSocket(tcp, tracer.StateEstablished, "10.0.0.1:9000", "10.0.0.2:40000", 3002),
			},
			Processes: procs(
				&proc.Process{Identity: proc.Identity{PID: 3001}, Name: "envoy", User: "envoy", Exe: "/usr/local/bin/envoy", Cmdline: "envoy -c /etc/envoy.yaml --base-id 1"},
				&proc.Process{Identity: proc.Identity{PID: 3002}, Name: "envoy", User: "envoy", Exe: "/usr/local/bin/envoy", Cmdline: "envoy -c /etc/envoy.yaml --base-id 2"},
				&proc.Process{Identity: proc.Identity{PID: 3003}, Name: "envoy", User: "envoy", Exe: "/usr/local/bin/envoy", Cmdline: "envoy -c /etc/envoy.yaml --base-id 3"}),
		}},
		{"many connections in several states", &snapshot.PortReport{Port: 6379, Sockets: many, Processes: procs(redis)}},
		{"UDP sockets, bound and connected, beside a TCP listener", &snapshot.PortReport{
			Port: 53,
			Sockets: []snapshot.PortSocket{
				portSocket(udp, tracer.StateClose, "127.0.0.53:53", "", 410),
				portSocket(udp, tracer.StateClose, "127.0.0.54:53", "", 410),
				portSocket(udp, tracer.StateEstablished, "10.0.0.1:53", "10.0.0.254:53", 410),
				portSocket(tcp, tracer.StateListen, "127.0.0.53:53", "", 410),
			},
			// No user name: /proc/PID/status could not be read.
			Processes: procs(&proc.Process{Identity: proc.Identity{PID: 410}, Name: "systemd-resolve", Exe: "/usr/lib/systemd/systemd-resolved", Cmdline: "/lib/systemd/systemd-resolved"}),
		}},
		{"TIME_WAIT held by no process, owners seen and not", &snapshot.PortReport{
			Port: 8082,
			Sockets: []snapshot.PortSocket{
				timeWait("10.0.0.1:8082", "10.0.0.2:40001", 58_250_000_000, seen),
				timeWait("10.0.0.1:8082", "10.0.0.2:40002", 1_049_000_000, &proc.Process{Identity: proc.Identity{PID: 4243}, Name: "wget"}),
				timeWait("10.0.0.1:8082", "10.0.0.3:40003", 31_000_000_000, nil),
				timeWait("[2001:db8::1]:8082", "[2001:db8::2]:40004", 0, nil),
				portSocket(tcp, tracer.StateFinWait2, "10.0.0.1:8082", "10.0.0.4:40005"),
			},
			Processes: procs(),
		}},
		{"notes on what the report could not cover", &snapshot.PortReport{
			Port:      3000,
			Sockets:   []snapshot.PortSocket{portSocket(tcp, tracer.StateListen, "0.0.0.0:3000", "", 5000)},
			Processes: procs(&proc.Process{Identity: proc.Identity{PID: 5000}, Name: "node", User: "bob", Exe: "/usr/bin/node", Cmdline: "node server.js"}),
			Notes: []string{
				"TIME_WAIT and orphaned sockets not shown: this kernel has no TCP sock_diag (load the tcp_diag module)",
				"a second note",
			},
		}},
		{"free port with a note", &snapshot.PortReport{
			Port:      3001,
			Processes: procs(),
			Notes:     []string{"TIME_WAIT and orphaned sockets not shown: this kernel has no TCP sock_diag (load the tcp_diag module)"},
		}},
		{"names written to make trouble", &snapshot.PortReport{
			Port: 6666,
			Sockets: []snapshot.PortSocket{
				portSocket(tcp, tracer.StateListen, "0.0.0.0:6666", "", 6666),
				timeWait("10.0.0.1:6666", "10.0.0.9:41000", 12_000_000_000, &proc.Process{Identity: proc.Identity{PID: 6667}, Name: "x\x1b[31mred\x1b[0m"}),
			},
			Processes: procs(evil),
		}},
		bothSides(),
		elsewhere(),
		clientPort(),
	}
}

// clientPort is who asked about a client's ephemeral port: the port is the
// client's (it connects from it), and the server's end is its peer.
func clientPort() whoCase {
	client := &proc.Process{Identity: proc.Identity{PID: 3300}, Name: "python3", User: "alice"}
	server := &proc.Process{Identity: proc.Identity{PID: 3400}, Name: "nginx", User: "www-data"}
	from := portSocket(tracer.ProtoTCP, tracer.StateEstablished, "127.0.0.1:57622", "127.0.0.1:18580", 3300)
	from.Role = tracer.RoleClient
	to := portSocket(tracer.ProtoTCP, tracer.StateEstablished, "127.0.0.1:18580", "127.0.0.1:57622", 3400)
	to.Role = tracer.RoleServer
	// And one whose server end a worker, exited since, left in FIN_WAIT2.
	closing := portSocket(tracer.ProtoTCP, tracer.StateCloseWait, "127.0.0.1:57622", "127.0.0.1:18581", 3300)
	closing.Role = tracer.RoleClient
	orphan := portSocket(tracer.ProtoTCP, tracer.StateFinWait2, "127.0.0.1:18581", "127.0.0.1:57622")
	orphan.Role, orphan.Seen = tracer.RoleServer, &proc.Process{Identity: proc.Identity{PID: 3401}, Name: "nginx", Exited: true}
	return whoCase{name: "a client's ephemeral port", report: &snapshot.PortReport{
		Port: 57622, Sockets: []snapshot.PortSocket{from, to, closing, orphan}, Processes: procs(client, server),
	}}
}

// elsewhere is who --all-netns: the same port here and in the network
// namespace t1, a TIME_WAIT socket on the same 4-tuple in each, whose
// owners a watch saw, one of which has exited since; the server here runs
// in a cgroup of its own.
func elsewhere() whoCase {
	const t1 = 4026532288
	here := &proc.Process{Identity: proc.Identity{PID: 1700}, Name: "caddy", User: "caddy",
		Cgroup: proc.Cgroup{Path: "/porttrace-test", ID: 8812}}
	there := &proc.Process{Identity: proc.Identity{PID: 1800}, Name: "caddy", User: "caddy",
		Cgroup: proc.Cgroup{Path: "/system.slice/caddy-t1.service", ID: 8813, Unit: "caddy-t1.service"}}
	inT1 := func(s snapshot.PortSocket) snapshot.PortSocket { s.NetNS = t1; return s }
	return whoCase{name: "every network namespace, a former owner since exited", report: &snapshot.PortReport{
		Port: 8443,
		Sockets: []snapshot.PortSocket{
			portSocket(tracer.ProtoTCP, tracer.StateListen, "127.0.0.1:8443", "", 1700),
			inT1(portSocket(tracer.ProtoTCP, tracer.StateListen, "127.0.0.1:8443", "", 1800)),
			timeWait("127.0.0.1:8443", "127.0.0.1:40000", 20e9, &proc.Process{Identity: proc.Identity{PID: 1700, StartNs: 5e9}, Name: "caddy", Cgroup: proc.Cgroup{ID: 8812}}),
			inT1(timeWait("127.0.0.1:8443", "127.0.0.1:40000", 20e9, &proc.Process{Identity: proc.Identity{PID: 1801, StartNs: 6e9}, Name: "caddy", Cgroup: proc.Cgroup{ID: 8813}, Exited: true})),
		},
		Processes: procs(here, there),
		Elsewhere: map[uint32]string{t1: "t1"},
	}}
}

// TestWhoTextAll: with --all every socket has a line of its own.
func TestWhoTextAll(t *testing.T) {
	var b bytes.Buffer
	for _, tc := range sampleReports() {
		if tc.report.Port == 6379 || tc.report.Port == 8000 {
			fmt.Fprintf(&b, "=== %s\n", tc.name)
			WhoText(&b, tc.report, WhoOptions{All: true, Now: whoNow})
			b.WriteString("\n")
		}
	}
	golden(t, "who-all.txt", b.Bytes())
}

// whoNow is the moment the sample reports are written at.
var whoNow = time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)

// bothSides is a server and, on the same host, the clients connected to
// it, one of which closed first and left its TIME_WAIT socket, and a
// container's process: who names each end's process.
func bothSides() whoCase {
	server := &proc.Process{Identity: proc.Identity{PID: 1234}, Name: "python3", User: "alice", RSSBytes: 20 << 20,
		StartTime: whoNow.Add(-90 * time.Second), Exe: "/usr/bin/python3.11", Cmdline: "python3 -m http.server 8000",
		Ancestors: []proc.Ancestor{{PID: 900, Name: "bash"}, {PID: 1, Name: "init"}}}
	curl := &proc.Process{Identity: proc.Identity{PID: 30380}, Name: "curl", User: "bob", RSSBytes: 9 << 20,
		StartTime: whoNow.Add(-2 * time.Second), Exe: "/usr/bin/curl", Cmdline: "curl http://127.0.0.1:8000/"}
	boxed := &proc.Process{Identity: proc.Identity{PID: 41000}, Name: "wget", User: "root",
		Cgroup: proc.Cgroup{Path: "/docker/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Container: &proc.Container{ID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Runtime: "docker"}}}
	clientTW := timeWait("127.0.0.1:47000", "127.0.0.1:8000", 30e9, nil)
	return whoCase{name: "both sides on one host", report: &snapshot.PortReport{
		Port: 8000,
		Sockets: []snapshot.PortSocket{
			withFD(portSocket(tracer.ProtoTCP, tracer.StateListen, "127.0.0.1:8000", "", 1234), 3),
			withFD(portSocket(tracer.ProtoTCP, tracer.StateEstablished, "127.0.0.1:8000", "127.0.0.1:47378", 1234), 4),
			withFD(portSocket(tracer.ProtoTCP, tracer.StateEstablished, "127.0.0.1:47378", "127.0.0.1:8000", 30380), 5),
			withFD(portSocket(tracer.ProtoTCP, tracer.StateSynSent, "10.0.0.5:52000", "10.0.0.9:8000", 41000), 7),
			// A client's connections, grouped by the port they go to.
			withFD(portSocket(tracer.ProtoTCP, tracer.StateEstablished, "10.0.0.5:52001", "10.0.0.9:8000", 41000), 8),
			withFD(portSocket(tracer.ProtoTCP, tracer.StateEstablished, "10.0.0.5:52002", "10.0.0.10:8000", 41000), 9),
			clientTW,
		},
		Processes: procs(server, curl, boxed),
		Elsewhere: map[uint32]string{},
	}}
}

func withFD(s snapshot.PortSocket, fd int32) snapshot.PortSocket {
	s.FDs = make([]int32, len(s.PIDs))
	for i := range s.FDs {
		s.FDs[i] = fd
	}
	return s
}

func TestWhoTextGolden(t *testing.T) {
	var b bytes.Buffer
	ports := map[uint16]string{}
	for _, tc := range sampleReports() {
		if other, ok := ports[tc.report.Port]; ok {
			t.Fatalf("%q and %q share port %d: who.json could not tell them apart", tc.name, other, tc.report.Port)
		}
		ports[tc.report.Port] = tc.name
		fmt.Fprintf(&b, "=== %s\n", tc.name)
		WhoText(&b, tc.report, WhoOptions{Now: whoNow})
		b.WriteString("\n")
	}
	golden(t, "who.txt", b.Bytes())
}

func TestWhoJSONGolden(t *testing.T) {
	var b bytes.Buffer
	for _, tc := range sampleReports() {
		start := b.Len()
		if err := WhoJSON(&b, tc.report); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// Each report is one line of valid JSON with the documented fields.
		line := b.Bytes()[start:]
		if bytes.Count(line, []byte("\n")) != 1 {
			t.Errorf("%s: not one line: %s", tc.name, line)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%s: not JSON: %v\n%s", tc.name, err, line)
		}
		for _, field := range []string{"port", "held", "processes", "sockets"} {
			if _, ok := m[field]; !ok {
				t.Errorf("%s lacks %q: %s", tc.name, field, line)
			}
		}
		sockets, _ := m["sockets"].([]any)
		for i, s := range sockets {
			sock, _ := s.(map[string]any)
			for _, field := range []string{"proto", "family", "state", "saddr", "sport", "daddr", "dport", "netns", "pids"} {
				if _, ok := sock[field]; !ok {
					t.Errorf("%s: socket %d lacks %q: %s", tc.name, i, field, line)
				}
			}
		}
	}
	golden(t, "who.json", b.Bytes())
}

// TestPeerScanMatchesIndex: the first questions, answered by scanning the
// report, get the answers the index gives later: an IPv4-mapped end finds
// its IPv4 peer, of two sockets with the same ends the last is the peer,
// and a listener is no one's.
func TestPeerScanMatchesIndex(t *testing.T) {
	const tcp = tracer.ProtoTCP
	r := &snapshot.PortReport{Port: 8080, Processes: map[uint32]*proc.Process{
		10: {Identity: proc.Identity{PID: 10}, Name: "server"}, 20: {Identity: proc.Identity{PID: 20}, Name: "client"},
		21: {Identity: proc.Identity{PID: 21}, Name: "again"},
	}, Sockets: []snapshot.PortSocket{
		portSocket(tcp, tracer.StateListen, "0.0.0.0:8080", "", 10),
		portSocket(tcp, tracer.StateEstablished, "[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:40000", 10),
		portSocket(tcp, tracer.StateEstablished, "127.0.0.1:40000", "127.0.0.1:8080", 20),
		portSocket(tcp, tracer.StateEstablished, "127.0.0.1:40000", "127.0.0.1:8080", 21),
		portSocket(tcp, tracer.StateEstablished, "127.0.0.1:8080", "127.0.0.1:40001", 10),
	}}
	scanning, indexed := &peerIndex{r: r}, &peerIndex{r: r, scans: peerScans}
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if a, b := scanning.name(s), indexed.name(s); a != b {
			t.Errorf("%v -> %v: scanned %q, indexed %q", s.Local, s.Remote, a, b)
		}
	}
	if indexed.conns == nil || scanning.conns != nil {
		t.Error("the index was built by the wrong one")
	}
	if got := scanning.name(&r.Sockets[1]); !strings.Contains(got, "again") {
		t.Errorf("the server's end names %q, want the last client socket with its ends", got)
	}
}
