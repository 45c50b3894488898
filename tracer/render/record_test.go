package render

import (
	"math"
	"unicode/utf8"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/proc"

	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// sampleRecords covers every shape of line: binds that work and fail,
// listen, a handshake, an unknown owner (named by the socket's cgroup), a
// listener's owner standing in, TIME_WAIT in and out, IPv6, sockets
// changing hands, an owner that exited, a thread with a name of its own,
// and names written to make trouble.
func sampleRecords() []tracer.Record {
	t0 := time.Date(2026, 11, 24, 3, 12, 0, 123456789, time.UTC).UnixNano()
	v4 := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	base := tracer.Record{TimeNs: t0, Type: tracer.RecordState, Proto: tracer.ProtoTCP, Family: tracer.FamilyIPv4, NetNS: 4026531833,
		SAddr: v4("10.0.0.1"), SPort: 8080, DAddr: v4("10.0.0.2"), DPort: 40000,
		Process:  tracer.Process{PID: 4242, StartNs: 1_234_560_000_000, Comm: tracer.CommFrom("nginx"), Thread: tracer.CommFrom("nginx"), CgroupID: 9101},
		OwnerVia: tracer.OwnerAccept, DurationNs: -1}
	with := func(edit func(*tracer.Record)) tracer.Record { r := base; edit(&r); return r }
	return []tracer.Record{
		with(func(r *tracer.Record) {
			r.Type, r.OwnerVia, r.SAddr, r.DAddr, r.DPort = tracer.RecordBind, tracer.OwnerBind, v4("0.0.0.0"), netip.Addr{}, 0
		}),
		with(func(r *tracer.Record) {
			r.Type, r.OwnerVia, r.Proto, r.PID, r.Err = tracer.RecordBind, tracer.OwnerBind, tracer.ProtoUDP, 999, 98
			r.Comm, r.Thread, r.DAddr, r.DPort = tracer.CommFrom("dnsmasq"), tracer.CommFrom("dnsmasq"), netip.Addr{}, 0
		}),
		with(func(r *tracer.Record) {
			r.Type, r.Old, r.New, r.OwnerVia, r.DAddr, r.DPort = tracer.RecordListen, tracer.StateClose, tracer.StateListen, tracer.OwnerListen, v4("0.0.0.0"), 0
		}),
		with(func(r *tracer.Record) { r.Old, r.New = tracer.StateListen, tracer.StateSynRecv }),
		with(func(r *tracer.Record) {
			r.Old, r.New, r.DurationNs = tracer.StateSynRecv, tracer.StateEstablished, 41_000
		}),
		with(func(r *tracer.Record) {
			r.Old, r.New, r.Process, r.OwnerVia = tracer.StateEstablished, tracer.StateCloseWait, tracer.Process{CgroupID: 9101}, tracer.OwnerUnknown
		}),
		with(func(r *tracer.Record) {
			r.Old, r.New, r.OwnerVia, r.DurationNs = tracer.StateSynRecv, tracer.StateEstablished, tracer.OwnerListener, 7_000
		}),
		with(func(r *tracer.Record) {
			r.Old, r.New, r.DurationNs, r.TimeoutNs = tracer.StateFinWait2, tracer.StateTimeWait, 1_500_000, 60e9
		}),
		with(func(r *tracer.Record) {
			r.Old, r.New, r.DurationNs, r.Reason = tracer.StateTimeWait, tracer.StateClose, 60_004_000_000, correlate.ReasonExpired
		}),
		with(func(r *tracer.Record) {
			r.Family, r.SAddr, r.DAddr = tracer.FamilyIPv6, netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::1234:5678")
			r.Old, r.New, r.DurationNs, r.OwnerVia = tracer.StateClose, tracer.StateSynSent, -1, tracer.OwnerConnect
			r.Comm = tracer.Comm{'e', 'v', 'i', 'l', '"', '\\', 0x1b, '[', '2', 'J', 0xff, 0}
			r.Thread = tracer.Comm{'t', 0x1b, ']', '0', ';', 'x', 0x07, 0}
		}),
		with(func(r *tracer.Record) {
			r.Type, r.New, r.DAddr, r.DPort, r.OwnerVia = tracer.RecordOwner, tracer.StateListen, v4("0.0.0.0"), 0, tracer.OwnerHolder
			r.Process = tracer.Process{PID: 4243, StartNs: 1_234_570_000_000, Comm: tracer.CommFrom("nginx"), CgroupID: 9101}
			r.Prev, r.PrevExited = tracer.Process{PID: 4241, StartNs: 1_234_500_000_000, Comm: tracer.CommFrom("nginx"), Thread: tracer.CommFrom("nginx"), CgroupID: 9101}, true
		}),
		with(func(r *tracer.Record) {
			r.Type, r.New, r.OwnerVia = tracer.RecordOwner, tracer.StateEstablished, tracer.OwnerClose
			r.Process = tracer.Process{PID: 4250, StartNs: 1_234_580_000_000, Comm: tracer.CommFrom("nginx"), Thread: tracer.CommFrom("nginx"), CgroupID: 9101}
			r.Prev = base.Process
		}),
		with(func(r *tracer.Record) {
			r.Old, r.New, r.DurationNs, r.TimeoutNs, r.OwnerExited = tracer.StateFinWait2, tracer.StateTimeWait, 2_000_000, 60e9, true
		}),
		with(func(r *tracer.Record) {
			r.Family, r.SAddr, r.DAddr = tracer.FamilyIPv6, netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("::ffff:10.0.0.2")
			r.Old, r.New, r.DurationNs = tracer.StateCloseWait, tracer.StateLastAck, 3_000_000
			r.Process = tracer.Process{PID: 5150, StartNs: 2_000_000_000, Comm: tracer.CommFrom("java"), Thread: tracer.CommFrom("http-nio-8080-e"), CgroupID: 9202}
		}),
		with(func(r *tracer.Record) {
			r.TimeNs += 52_000
			r.SAddr, r.SPort, r.DAddr, r.DPort = v4("10.0.0.2"), 40001, v4("10.0.0.1"), 9
			r.Old, r.New, r.DurationNs, r.OwnerVia, r.Err = tracer.StateSynSent, tracer.StateClose, 52_000, tracer.OwnerConnect, 111
			r.Process = tracer.Process{PID: 777, StartNs: 3_000_000_000, Comm: tracer.CommFrom("curl"), Thread: tracer.CommFrom("curl"), CgroupID: 9404}
		}),
		with(func(r *tracer.Record) {
			r.TimeNs -= 1_500_000_000
			r.Old, r.New, r.DurationNs, r.OwnerVia, r.Late = tracer.StateSynRecv, tracer.StateEstablished, 9_000, tracer.OwnerListener, true
		}),
		with(func(r *tracer.Record) {
			r.Old, r.New, r.DurationNs, r.NetNS = tracer.StateSynRecv, tracer.StateEstablished, 52_000, otherNetNS
			r.Process = tracer.Process{PID: 6160, StartNs: 3_000_000_000, Comm: tracer.CommFrom("caddy"), Thread: tracer.CommFrom("caddy"), CgroupID: 9303}
		}),
		with(func(r *tracer.Record) {
			r.Type, r.Proto, r.New, r.OwnerVia, r.DAddr, r.DPort = tracer.RecordSocket, tracer.ProtoUDP, tracer.StateClose, tracer.OwnerSnapshot, v4("0.0.0.0"), 0
		}),
		with(func(r *tracer.Record) {
			r.Type, r.New, r.OwnerVia, r.TimeoutNs = tracer.RecordSocket, tracer.StateTimeWait, tracer.OwnerSnapshot, 42_500_000_000
		}),
	}
}

// otherNetNS is the network namespace of a sample line that is not the
// watch's own.
const otherNetNS = 4026532288

// testLabels labels sample lines as a watch in the first sample's
// namespace does, naming otherNetNS as ip netns might have, and the
// samples' cgroups: nginx's unit, java's Kubernetes container, caddy's
// docker container, curl's login session.
func testLabels() *Labels {
	return &Labels{
		OwnNetNS: 4026531833,
		NetNSName: func(inode uint32) string {
			if inode == otherNetNS {
				return "t1"
			}
			return "unexpected"
		},
		Cgroup: func(id uint64) (proc.Cgroup, bool) {
			c, ok := map[uint64]string{
				9101: "/system.slice/nginx.service",
				9202: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d8a1c2e_5b7f_4a39_9e1d_2f6b8c4a7e10.slice/cri-containerd-5150aaaabbbbccccddddeeeeffff00001111222233334444555566667777aaaa.scope",
				9303: "/system.slice/docker-6160aaaabbbbccccddddeeeeffff00001111222233334444555566667777bbbb.scope",
				9404: "/user.slice/user-0.slice/session-1.scope",
			}[id]
			cg := proc.ParseCgroupPath(c)
			cg.ID = id
			return cg, ok
		},
	}
}

func TestTextGolden(t *testing.T) {
	for _, tc := range []struct {
		file  string
		color bool
	}{{"records.txt", false}, {"records.color.txt", true}} {
		text := Text{Location: time.UTC, Color: tc.color, Labels: testLabels()}
		b := text.AppendHeader(nil)
		for _, r := range sampleRecords() {
			b = text.AppendRecord(b, &r)
		}
		golden(t, tc.file, b)
	}
}

// TestTimeFormatsGolden writes a few lines in each time format, the
// relative one from a watch started 3.5 s before the first.
func TestTimeFormatsGolden(t *testing.T) {
	var b []byte
	for _, f := range []TimeFormat{TimeClock, TimeDate, TimeRelative} {
		recs := sampleRecords()
		text := Text{Location: time.UTC, Time: f, StartNs: recs[0].TimeNs - 3_500_000_000}
		b = fmt.Appendf(b, "=== --time %s\n", f)
		b = text.AppendHeader(b)
		for _, r := range recs[2:5] {
			b = text.AppendRecord(b, &r)
		}
	}
	golden(t, "times.txt", b)
}

func TestParseTimeFormat(t *testing.T) {
	for _, name := range TimeFormatNames() {
		f, err := ParseTimeFormat(name)
		if err != nil || f.String() != name {
			t.Errorf("%q: %v, %v", name, f, err)
		}
	}
	if _, err := ParseTimeFormat("iso"); err == nil || err.Error() != `invalid time format "iso": want clock, date or relative` {
		t.Errorf("iso: %v", err)
	}
}

// TestColumnsFitTheWidestEndpoint: the endpoint columns widen, with a new
// header, for an endpoint wider than any before, and only then.
func TestColumnsFitTheWidestEndpoint(t *testing.T) {
	recs := sampleRecords()
	wide := recs[0]
	wide.Type, wide.Family = tracer.RecordState, tracer.FamilyIPv6
	wide.SAddr, wide.DAddr = netip.MustParseAddr("2001:db8:85a3::8a2e:370:7334"), netip.MustParseAddr("2001:db8::1")
	var text Text
	b := text.AppendHeader(nil)
	for _, r := range []tracer.Record{recs[3], wide, recs[3], wide} {
		b = text.AppendRecord(b, &r)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	headers := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "TIME") {
			headers++
		}
	}
	if headers != 2 || len(lines) != 6 || !strings.HasPrefix(lines[2], "TIME") {
		t.Fatalf("want a header, a line, a wider header and three lines:\n%s", b)
	}
	// Every line after the wider header has its REMOTE column where the
	// header has it.
	col := strings.Index(lines[2], "REMOTE")
	for _, l := range lines[3:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("REMOTE not at column %d:\n%s\n%s", col, lines[2], l)
		}
	}
}

func TestJSONGolden(t *testing.T) {
	var b []byte
	labels := testLabels()
	for _, r := range sampleRecords() {
		b = AppendJSON(b, &r, labels)
	}
	golden(t, "records.json", b)

	// Every line is valid JSON with the documented fields.
	for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		for _, field := range []string{"time", "type", "proto", "family", "saddr", "sport", "daddr", "dport", "old", "new", "pid", "comm", "thread", "start_ns", "cgroup_id", "owner_via", "netns", "duration_ns"} {
			if _, ok := m[field]; !ok {
				t.Errorf("line %d lacks %q: %s", i, field, line)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Errorf("line %d: time: %v", i, err)
		}
	}
}

func TestFormatAllocatesNothing(t *testing.T) {
	recs := sampleRecords()
	buf := make([]byte, 0, 4096)
	// A namespace or cgroup is named the first time a line of it is
	// printed (in the run AllocsPerRun does not count); never again.
	labels := testLabels()
	text := Text{Location: time.UTC, Color: true, Time: TimeRelative, Labels: labels}
	var kept jsonKept
	if n := testing.AllocsPerRun(100, func() {
		for i := range recs {
			buf = text.AppendRecord(buf[:0], &recs[i])
			buf = appendJSON(buf[:0], &recs[i], labels, &kept)
		}
	}); n != 0 {
		t.Errorf("formatting allocates %v times per batch", n)
	}
}

// BenchmarkFormat measures turning a record into a line.
func BenchmarkFormat(b *testing.B) {
	recs := sampleRecords()
	buf := make([]byte, 0, 512)
	// Both keep their last owner's fields, as a Printer's do.
	text := Text{}
	var kept jsonKept
	for _, tc := range []struct {
		name string
		fn   func(*tracer.Record)
	}{
		{"text", func(r *tracer.Record) { buf = text.AppendRecord(buf[:0], r) }},
		{"json", func(r *tracer.Record) { buf = appendJSON(buf[:0], r, nil, &kept) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				tc.fn(&recs[i%len(recs)])
			}
		})
	}
}

// TestAppendTimeOfDay: the time written by hand is what time's layouts
// write, for the text's clock formats and for JSON.
func TestAppendTimeOfDay(t *testing.T) {
	zone := time.FixedZone("X", -(3*3600 + 30*60))
	for _, ns := range []int64{0, 1, 999_999_999, 1_700_000_000_123_456_789, 1_790_000_000_000_000_001, 4_102_444_799_999_999_999} {
		tm := time.Unix(0, ns).In(zone)
		for _, format := range []TimeFormat{TimeClock, TimeDate} {
			text := &Text{Location: zone, Time: format}
			if got, want := string(text.appendTime(nil, ns)), tm.Format(format.layout()); got != want {
				t.Errorf("%d as %q: %q", ns, want, got)
			}
		}
		if got, want := string(appendJSONTime(nil, ns)), time.Unix(0, ns).UTC().Format(JSONTimeLayout); got != want {
			t.Errorf("%d in JSON: %q, want %q", ns, got, want)
		}
	}
}

// TestClockSecondsReused: the text's clock, which formats each second once
// for all its lines, reads as time.Format does across seconds, midnight
// and a zone's offset.
func TestClockSecondsReused(t *testing.T) {
	loc := time.FixedZone("IST", 5*3600+1800)
	base := time.Date(2026, 12, 1, 23, 59, 58, 0, loc).UnixNano()
	for _, format := range []TimeFormat{TimeClock, TimeDate} {
		text := &Text{Location: loc, Time: format}
		for _, ns := range []int64{base, base + 1, base + 999_999_999, base + 1e9, base + 1e9 + 123_456_789, base + 2e9 + 5_000, base + 2e9 + 5_001, base + 1e9} {
			got := string(text.appendTime(nil, ns))
			if want := time.Unix(0, ns).In(loc).Format(format.layout()); got != want {
				t.Errorf("%v at %d: %q, want %q", format, ns, got, want)
			}
		}
	}
}

// TestOwnerColumnsReused: the text's owner columns and the JSON's process
// fields, kept from the last line, change with the process, and a thread
// named apart is named whatever the owner's columns were.
func TestOwnerColumnsReused(t *testing.T) {
	text := &Text{}
	json := &jsonKept{}
	for _, p := range []tracer.Process{
		{PID: 10, Comm: tracer.CommFrom("nginx")},
		{PID: 10, Comm: tracer.CommFrom("nginx")},
		{PID: 11, Comm: tracer.CommFrom("nginx")},
		{PID: 11, Comm: tracer.CommFrom("java"), Thread: tracer.CommFrom("http-nio-8080")},
		{},
		{PID: 10, Comm: tracer.CommFrom("nginx"), Thread: tracer.CommFrom("nginx")},
		{PID: 10, Comm: tracer.CommFrom("nginx"), Thread: tracer.CommFrom("nginx"), StartNs: 5},
		{PID: 10, Comm: tracer.CommFrom("nginx"), Thread: tracer.CommFrom("nginx"), StartNs: 5, CgroupID: 9},
	} {
		got := string(appendThread(text.appendOwner(nil, &p), &p))
		want := string(appendThread(appendOwner(nil, &p), &p))
		if got != want {
			t.Errorf("%+v: %q, want %q", p, got, want)
		}
		if got, want := string(json.appendProcess(nil, &p)), string(appendProcessJSON(nil, &p)); got != want {
			t.Errorf("%+v: %s, want %s", p, got, want)
		}
	}
}

func TestAppendMs(t *testing.T) {
	for ns, want := range map[int64]string{-1: "-", 0: "0.000", 499: "0.000", 500: "0.001", 1_234_567: "1.235", 60_000_000_000: "60000.000", 4_500: "0.005"} {
		if got := string(appendMs(nil, ns)); got != want {
			t.Errorf("appendMs(%d) = %q, want %q", ns, got, want)
		}
	}
}

// FuzzAppendJSONString: any bytes (a process may name itself anything)
// come out as one valid JSON string that reads back as them, each byte of
// invalid UTF-8 replaced by U+FFFD as encoding/json does.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "nginx", `a"b\c`, "tab\there", "caf\xc3\xa9", "bad\xffbyte", "\x00\x1f\x7f", "end\xc3"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		out := appendJSONString([]byte("x"), s)[1:]
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q gave %q: %v", s, out, err)
		}
		var want []rune
		for rest := s; len(rest) > 0; {
			r, size := utf8.DecodeRune(rest)
			want = append(want, r)
			rest = rest[size:]
		}
		if got != string(want) {
			t.Errorf("%q gave %q, reads back as %q, want %q", s, out, got, string(want))
		}
	})
}

// FuzzAppendJSONTime: a JSON line's time, worked out by arithmetic, is
// what the time package writes in JSONTimeLayout, for every time an int64
// of nanoseconds holds (1677 to 2262, leap days and centuries included),
// with its second's date and clock kept from one line to the next or not.
func FuzzAppendJSONTime(f *testing.F) {
	for _, ns := range []int64{0, -1, 1, 951782400e9, 951868800e9 - 1, 4107542400e9, 1796191064020709181, math.MaxInt64, math.MinInt64} {
		f.Add(ns)
	}
	// A keeper of the last second, as a Printer's, across the inputs.
	var kept jsonKept
	f.Fuzz(func(t *testing.T, ns int64) {
		want := time.Unix(0, ns).UTC().Format(JSONTimeLayout)
		if got := string(appendJSONTime(nil, ns)); got != want {
			t.Errorf("%d: %s, want %s", ns, got, want)
		}
		for range 2 {
			if got := string(kept.appendTime(nil, ns)); got != want {
				t.Errorf("%d, the second kept: %s, want %s", ns, got, want)
			}
		}
	})
}
