package tracer

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// sampleRecords covers every shape of line: binds that work and fail,
// listen, a handshake, an unknown owner, a listener's owner standing in,
// TIME_WAIT in and out, IPv6, and a command name written to make trouble.
func sampleRecords() []Record {
	t0 := time.Date(2026, 11, 24, 3, 12, 0, 123456789, time.UTC).UnixNano()
	v4 := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	base := Record{TimeNs: t0, Type: RecordState, Proto: ProtoTCP, Family: FamilyIPv4, NetNS: 4026531833,
		SAddr: v4("10.0.0.1"), SPort: 8080, DAddr: v4("10.0.0.2"), DPort: 40000,
		PID: 4242, Comm: CommFrom("nginx"), OwnerVia: OwnerAccept, DurationNs: -1}
	with := func(edit func(*Record)) Record { r := base; edit(&r); return r }
	return []Record{
		with(func(r *Record) {
			r.Type, r.OwnerVia, r.SAddr, r.DAddr, r.DPort = RecordBind, OwnerBind, v4("0.0.0.0"), netip.Addr{}, 0
		}),
		with(func(r *Record) {
			r.Type, r.OwnerVia, r.Proto, r.PID, r.Err = RecordBind, OwnerBind, ProtoUDP, 999, 98
			r.Comm, r.DAddr, r.DPort = CommFrom("dnsmasq"), netip.Addr{}, 0
		}),
		with(func(r *Record) {
			r.Type, r.Old, r.New, r.OwnerVia, r.DAddr, r.DPort = RecordListen, StateClose, StateListen, OwnerListen, v4("0.0.0.0"), 0
		}),
		with(func(r *Record) { r.Old, r.New = StateListen, StateSynRecv }),
		with(func(r *Record) { r.Old, r.New, r.DurationNs = StateSynRecv, StateEstablished, 41_000 }),
		with(func(r *Record) {
			r.Old, r.New, r.PID, r.Comm, r.OwnerVia = StateEstablished, StateCloseWait, 0, Comm{}, OwnerUnknown
		}),
		with(func(r *Record) {
			r.Old, r.New, r.OwnerVia, r.DurationNs = StateSynRecv, StateEstablished, OwnerListener, 7_000
		}),
		with(func(r *Record) {
			r.Old, r.New, r.DurationNs, r.TimeoutNs = StateFinWait2, StateTimeWait, 1_500_000, 60e9
		}),
		with(func(r *Record) {
			r.Old, r.New, r.DurationNs, r.Reason = StateTimeWait, StateClose, 60_004_000_000, ReasonExpired
		}),
		with(func(r *Record) {
			r.Family, r.SAddr, r.DAddr = FamilyIPv6, netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::1234:5678")
			r.Old, r.New, r.DurationNs, r.OwnerVia = StateClose, StateSynSent, -1, OwnerConnect
			r.Comm = Comm{'e', 'v', 'i', 'l', '"', '\\', 0x1b, '[', '2', 'J', 0xff, 0}
		}),
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; got:\n%s", name, got)
	}
}

func TestTextGolden(t *testing.T) {
	for _, tc := range []struct {
		file  string
		color bool
	}{{"records.txt", false}, {"records.color.txt", true}} {
		b := append([]byte(TextHeader()), '\n')
		for _, r := range sampleRecords() {
			b = AppendText(b, &r, time.UTC, tc.color)
		}
		golden(t, tc.file, b)
	}
}

func TestJSONGolden(t *testing.T) {
	var b []byte
	for _, r := range sampleRecords() {
		b = AppendJSON(b, &r)
	}
	golden(t, "records.json", b)

	// Every line is valid JSON with the documented fields.
	for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		for _, field := range []string{"time", "type", "proto", "family", "saddr", "sport", "daddr", "dport", "old", "new", "pid", "comm", "owner_via", "netns", "duration_ns"} {
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
	if n := testing.AllocsPerRun(100, func() {
		for i := range recs {
			buf = AppendText(buf[:0], &recs[i], time.UTC, true)
			buf = AppendJSON(buf[:0], &recs[i])
		}
	}); n != 0 {
		t.Errorf("formatting allocates %v times per batch", n)
	}
}
