package windows

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

// netshEnglish is `netsh int ipv4 show excludedportrange protocol=tcp` on
// an English Windows 10 with Hyper-V, as users post it.
const netshEnglish = `
Protocol tcp Port Exclusion Ranges

Start Port    End Port
----------    --------
      5357        5357
     49671       49770
     50000       50059     *
     61117       61216

* - Administered port exclusions.

`

// netshGerman is the same table on a German Windows, with CRLF line ends.
const netshGerman = "\r\nProtokoll tcp Portausschlussbereiche\r\n\r\nStartport    Endport\r\n----------    --------\r\n      1031        1130\r\n     50000       50059     *\r\n\r\n* - Verwaltete Portausschlüsse.\r\n\r\n"

func TestParseExcludedRanges(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []PortRange
	}{
		{"english", netshEnglish, []PortRange{{5357, 5357, false}, {49671, 49770, false}, {50000, 50059, true}, {61117, 61216, false}}},
		{"german, CRLF", netshGerman, []PortRange{{1031, 1130, false}, {50000, 50059, true}}},
		{"no ranges (wine's netsh prints nothing)", "", nil},
		{"rows that are no ranges", "1 2 3\n70000 70001\n20 10\n10 x\n5 6 +\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseExcludedRanges(tc.out); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func FuzzParseExcludedRanges(f *testing.F) {
	f.Add(netshEnglish)
	f.Add(netshGerman)
	f.Fuzz(func(t *testing.T, out string) {
		for _, r := range parseExcludedRanges(out) {
			if r.Low > r.High {
				t.Fatalf("range %v from %q", r, out)
			}
		}
	})
}

func socketOn(state tracer.State, local string, pids ...uint32) snapshot.PortSocket {
	return snapshot.PortSocket{Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, State: state, Local: ap(local), PIDs: pids}
}

func TestRefusalNotes(t *testing.T) {
	ranges := parseExcludedRanges(netshEnglish)
	empty := func(port uint16) *snapshot.PortReport { return &snapshot.PortReport{Port: port} }
	held := &snapshot.PortReport{Port: 8080, Sockets: []snapshot.PortSocket{socketOn(tracer.StateListen, "0.0.0.0:8080", 10)}}
	for _, tc := range []struct {
		name   string
		req    why.Request
		report *snapshot.PortReport
		trial  string
		err    error
		want   []string // words of the one note; none for no note
	}{
		{"reserved at run time", why.Request{Port: 49700}, empty(49700), "WSAEACCES", nil,
			[]string{"inside the excluded port range 49671-49770", "net stop winnat", "startport=49700 numberofports=1", "netsh int ipv4"}},
		{"reserved, IPv6 UDP", why.Request{Port: 49700, UDP: true, Addr: netip.IPv6Unspecified()}, empty(49700), "WSAEACCES", nil,
			[]string{"netsh int ipv6 show excludedportrange protocol=udp"}},
		{"administered", why.Request{Port: 50001}, empty(50001), "WSAEACCES", nil,
			[]string{"50000-50059 that an administrator added", "delete excludedportrange protocol=tcp startport=50000 numberofports=60"}},
		{"the range's last port", why.Request{Port: 61216}, empty(61216), "WSAEACCES", nil, []string{"61117-61216"}},
		{"netsh failed", why.Request{Port: 49700}, empty(49700), "WSAEACCES", errors.New("exec: netsh.exe: file not found"),
			[]string{"unknown", "file not found"}},
		{"an exclusive socket", why.Request{Port: 8080, ReuseAddr: true}, held, "WSAEACCES", nil, []string{"no excluded port range", "SO_EXCLUSIVEADDRUSE"}},
		{"nothing explains it", why.Request{Port: 8080}, empty(8080), "WSAEACCES", nil, []string{"no excluded port range", "security product"}},
		{"in use, shown", why.Request{Port: 8080}, held, "WSAEADDRINUSE", nil, nil},
		{"in use, hidden: bound, not listening", why.Request{Port: 8080}, empty(8080), "WSAEADDRINUSE", nil, []string{"Get-NetTCPConnection -State Bound -LocalPort 8080"}},
		{"in use, UDP", why.Request{Port: 8080, UDP: true}, empty(8080), "WSAEADDRINUSE", nil, []string{"UDP table"}},
		{"free", why.Request{Port: 49700}, empty(49700), "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rs []PortRange
			if tc.err == nil {
				rs = ranges
			}
			notes := refusalNotes(tc.req, tc.report, tc.trial, rs, tc.err)
			if len(notes) != min(len(tc.want), 1) {
				t.Fatalf("notes %q, want %d", notes, min(len(tc.want), 1))
			}
			for _, w := range tc.want {
				if !strings.Contains(notes[0], w) {
					t.Errorf("note %q lacks %q", notes[0], w)
				}
			}
		})
	}
}

func TestKernelNotes(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *snapshot.PortReport
		want string
	}{
		{"HTTP.sys on 80", &snapshot.PortReport{Port: 80, Sockets: []snapshot.PortSocket{socketOn(tracer.StateListen, "0.0.0.0:80", systemPID)}}, "HTTP.sys"},
		{"HTTP.sys on 5985", &snapshot.PortReport{Port: 5985, Sockets: []snapshot.PortSocket{socketOn(tracer.StateListen, "[::]:5985", systemPID)}}, "netsh http show servicestate"},
		{"SMB", &snapshot.PortReport{Port: 445, Sockets: []snapshot.PortSocket{socketOn(tracer.StateListen, "0.0.0.0:445", systemPID)}}, "lanmanserver"},
		{"a program", &snapshot.PortReport{Port: 80, Sockets: []snapshot.PortSocket{socketOn(tracer.StateListen, "0.0.0.0:80", 1234)}}, ""},
		// The kernel connecting to the port from this host does not
		// serve on it.
		{"System as a client", &snapshot.PortReport{Port: 80, Sockets: []snapshot.PortSocket{{Proto: tracer.ProtoTCP, State: tracer.StateEstablished, Local: ap("10.0.0.1:50000"), Remote: ap("10.0.0.2:80"), PIDs: []uint32{systemPID}}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notes := kernelNotes(tc.r)
			if tc.want == "" {
				if len(notes) != 0 {
					t.Errorf("notes %q, want none", notes)
				}
				return
			}
			if len(notes) != 1 || !strings.Contains(notes[0], tc.want) {
				t.Errorf("notes %q, want one naming %q", notes, tc.want)
			}
		})
	}
}
