package linux

import (
	"github.com/porttrace/porttrace/tracer"

	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

// TestDecoderMatchesCLayout checks the hand-written decoder against the Go
// type bpf2go generates from the C struct: same size, same offsets, and a
// record encoded from the generated type decodes to the same values.
func TestDecoderMatchesCLayout(t *testing.T) {
	var e bpf.PorttraceEvent
	if got := int(unsafe.Sizeof(e)); got != eventSize {
		t.Fatalf("struct event is %d bytes, decoder expects %d", got, eventSize)
	}
	offsets := map[string]uintptr{
		"TsNs": offTime, "Sock": offSock, "TimeoutNs": offTimeout, "Parent": offParent, "Saddr": offSAddr, "Daddr": offDAddr,
		"StartNs": offStart, "CgroupId": offCgroup, "SockCgroupId": offSockCgroup,
		"Pid": offPID, "Netns": offNetNS, "Err": offErr, "Sport": offSPort, "Dport": offDPort,
		"Family": offFamily, "Proto": offProto, "Kind": offKind, "Oldstate": offOldState,
		"Newstate": offNewState, "Flags": offFlags, "Comm": offComm, "Thread": offThread, "Inode": offInode, "Ppid": offPPID,
	}
	checkOffsets(t, reflect.TypeOf(e), offsets)

	e = bpf.PorttraceEvent{
		TsNs: 1_000, Sock: 0xffff888104f5c0c0, TimeoutNs: -4_000_000, Parent: 0xffff888104f5d000, StartNs: 987_654_321, CgroupId: 4242_4242,
		SockCgroupId: 77, Pid: 4242, Ppid: 4000, Netns: 4026531833, Err: -98, Sport: 8080, Dport: 51234, Family: unix.AF_INET6, Proto: 262,
		Kind: uint8(tracer.KindTimeWaitCancel), Oldstate: uint8(tracer.StateFinWait1), Newstate: uint8(tracer.StateTimeWait),
		Flags: flagKernelThread, Inode: 1015533,
	}
	copy(e.Saddr[:], netip.MustParseAddr("::1").AsSlice())
	copy(e.Daddr[:], netip.MustParseAddr("2001:db8::7").AsSlice())
	for i, c := range "java" {
		e.Comm[i] = int8(c)
	}
	for i, c := range "http-nio-8080-A" {
		e.Thread[i] = int8(c)
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &e); err != nil {
		t.Fatal(err)
	}
	var ev tracer.Event
	if err := decodeEvent(buf.Bytes(), 5, &ev); err != nil {
		t.Fatal(err)
	}
	want := tracer.Event{
		TimeNs: 1_005, Kind: tracer.KindTimeWaitCancel, Proto: tracer.ProtoMPTCP, Family: tracer.FamilyIPv6,
		OldState: tracer.StateFinWait1, NewState: tracer.StateTimeWait, Sock: 0xffff888104f5c0c0, Parent: 0xffff888104f5d000,
		SAddr: netip.MustParseAddr("::1"), DAddr: netip.MustParseAddr("2001:db8::7"),
		SPort: 8080, DPort: 51234, NetNS: 4026531833, Err: -98, TimeoutNs: -4_000_000,
		Process: tracer.Process{PID: 4242, PPID: 4000, StartNs: 987_654_321, Comm: tracer.CommFrom("java"),
			Thread: tracer.CommFrom("http-nio-8080-A"), CgroupID: 4242_4242},
		KernelThread: true, SockCgroupID: 77, Inode: 1015533,
	}
	if ev != want {
		t.Errorf("decoded\n %+v\nwant\n %+v", ev, want)
	}
}

// checkOffsets compares the offsets a decoder reads with the fields of the
// Go type bpf2go generated from the C struct: every field but padding must
// be decoded, at its offset.
func checkOffsets(t *testing.T, typ reflect.Type, offsets map[string]uintptr) {
	t.Helper()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if f.Name == "_" || f.Name == "Pad" {
			continue
		}
		if want, ok := offsets[f.Name]; !ok {
			t.Errorf("C field %s is not decoded", f.Name)
		} else if f.Offset != want {
			t.Errorf("field %s at offset %d in C, decoder reads %d", f.Name, f.Offset, want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := make([]byte, eventSize)
	binary.NativeEndian.PutUint16(valid[offFamily:], unix.AF_INET)
	valid[offKind] = byte(tracer.KindState)
	var ev tracer.Event
	if err := decodeEvent(valid, 0, &ev); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:eventSize-1] }, errShortEvent},
		{"kind 0", func(b []byte) []byte { b[offKind] = 0; return b }, errBadKind},
		{"kind past last", func(b []byte) []byte { b[offKind] = byte(tracer.KindExit) + 1; return b }, errBadKind},
		{"family AF_UNIX", func(b []byte) []byte { binary.NativeEndian.PutUint16(b[offFamily:], unix.AF_UNIX); return b }, errBadFamily},
		{"state 13", func(b []byte) []byte { b[offNewState] = 13; return b }, errBadState},
	} {
		raw := tc.edit(append([]byte(nil), valid...))
		if err := decodeEvent(raw, 0, &ev); err != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestDecodeAllocatesNothing(t *testing.T) {
	raw := make([]byte, eventSize)
	binary.NativeEndian.PutUint16(raw[offFamily:], unix.AF_INET6)
	raw[offKind] = byte(tracer.KindState)
	var ev tracer.Event
	if n := testing.AllocsPerRun(100, func() { decodeEvent(raw, 0, &ev) }); n != 0 {
		t.Errorf("decodeEvent allocates %v times per event", n)
	}
}

// FuzzDecodeEvent feeds the decoder arbitrary ring buffer records: it must
// never panic, and whatever it accepts must be a consistent event.
func FuzzDecodeEvent(f *testing.F) {
	seed := make([]byte, eventSize)
	binary.NativeEndian.PutUint16(seed[offFamily:], unix.AF_INET)
	seed[offKind] = byte(tracer.KindState)
	f.Add(seed)
	f.Add(seed[:10])
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ev tracer.Event
		if err := decodeEvent(raw, 0, &ev); err != nil {
			return
		}
		if ev.Kind < tracer.KindState || ev.Kind > tracer.KindExit || ev.NewState >= tracer.StateCount || ev.OldState >= tracer.StateCount {
			t.Fatalf("accepted an inconsistent event: %+v", ev)
		}
		if (ev.Family == tracer.FamilyIPv4) != ev.SAddr.Is4() {
			t.Fatalf("family %v with address %v", ev.Family, ev.SAddr)
		}
	})
}

// TestDecodeExit: a process's exit is about no socket, and decodes without
// an address family.
func TestDecodeExit(t *testing.T) {
	raw := make([]byte, eventSize)
	raw[offKind] = byte(tracer.KindExit)
	binary.NativeEndian.PutUint32(raw[offPID:], 4242)
	binary.NativeEndian.PutUint64(raw[offStart:], 987_000_000)
	copy(raw[offComm:], "nginx")
	var ev tracer.Event
	if err := decodeEvent(raw, 0, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != tracer.KindExit || ev.Family != 0 || ev.SAddr.IsValid() || ev.PID != 4242 || ev.StartNs != 987_000_000 || ev.Comm.String() != "nginx" {
		t.Errorf("decoded %+v", ev)
	}
}
