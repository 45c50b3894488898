package linux

import (
	"cmp"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/porttrace/porttrace/tracer"
)

// TestKernelInPlaceReadsMatchHelperReads traces one connection twice at
// once, with the reads in place this kernel allows (bpf/read.h) and with
// every read through bpf_probe_read_kernel: both must report the same
// events, field by field, so that a read in place of the wrong field or
// of too few bytes shows.
func TestKernelInPlaceReadsMatchHelperReads(t *testing.T) {
	needPrivileges(t)
	found := probeThisKernel(t).inPlace
	if !found.sock && !found.task {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must run this test on a kernel with reads in place: %s", found)
		}
		t.Skip(found)
	}
	// bpf_rdonly_cast, which types the sockets found by hand, is 6.2+.
	if found.cast != kernelAtLeast(t, 6, 2) {
		t.Errorf("sockets of descriptors and timers read in place: %v on %s", found.cast, kernelRelease(t))
	}
	port := freePort(t, "127.0.0.1")
	cfg := tracer.Config{Ports: tracer.Ports{port}}
	inPlace, inPlaceSrc := traceAllowing(t, cfg, defaultHooks, inPlaceReads{sock: true, task: true, cast: true})
	helper, helperSrc := traceAllowing(t, cfg, defaultHooks, inPlaceReads{})
	for src, want := range map[*LinuxSource]string{inPlaceSrc: found.String(), helperSrc: inPlaceReads{}.String()} {
		if hooks := strings.Join(src.Hooks(), "\n"); !strings.Contains(hooks, want) {
			t.Errorf("hooks say:\n%s\nwant %q", hooks, want)
		}
	}

	loopbackTraffic(t, port)
	// The client closes first: its socket goes to TIME_WAIT, the
	// server's through LAST_ACK to CLOSE, and the listener closes.
	done := func(evs []tracer.Event) bool {
		timewait, closes := false, 0
		for _, ev := range evs {
			timewait = timewait || ev.Kind == tracer.KindTimeWaitStart
			if ev.Kind == tracer.KindState && ev.NewState == tracer.StateClose {
				closes++
			}
		}
		return timewait && closes == 3
	}
	a, b := portEvents(t, inPlace, port, done), portEvents(t, helper, port, done)
	if len(a) != len(b) {
		t.Fatalf("%d events read in place, %d through the helper:\n%v\n%v", len(a), len(b), a, b)
	}
	for i := range a {
		// The two programs run one after the other: the clocks they
		// read may tick in between.
		if d := a[i].TimeoutNs - b[i].TimeoutNs; d < -int64(10*time.Millisecond) || d > int64(10*time.Millisecond) {
			t.Errorf("event %d: timeouts %d and %d", i, a[i].TimeoutNs, b[i].TimeoutNs)
		}
		a[i].TimeNs, b[i].TimeNs, a[i].TimeoutNs, b[i].TimeoutNs = 0, 0, 0, 0
		if a[i] != b[i] {
			t.Errorf("event %d read in place:\n%+v\nthrough the helper:\n%+v", i, a[i], b[i])
		}
	}
}

// portEvents waits until rec's events of port satisfy done, and returns
// them in an order that does not depend on the CPUs they came from.
func portEvents(t *testing.T, rec *recorder, port uint16, done func([]tracer.Event) bool) []tracer.Event {
	t.Helper()
	var evs []tracer.Event
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		evs = slices.DeleteFunc(rec.events(), func(ev tracer.Event) bool { return ev.SPort != port && ev.DPort != port })
		if done(evs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for the connection's events; got %v", evs)
		}
	}
	slices.SortStableFunc(evs, func(a, b tracer.Event) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Sock, b.Sock), cmp.Compare(a.OldState, b.OldState), cmp.Compare(a.NewState, b.NewState))
	})
	return evs
}

// TestKernelOwnerIteratorInPlaceMatchesHelper walks the open files of
// every process twice, reading sockets in place (bpf_sock_from_file) and
// through the helper: both must find the same sockets on the port, field
// by field: TCP on IPv4 and IPv6 (listeners and both ends of a
// connection) and UDP.
func TestKernelOwnerIteratorInPlaceMatchesHelper(t *testing.T) {
	needPrivileges(t)
	types := btf.NewCache()
	inPlaceOK := iterSockFromFile(types)
	if release := kernelRelease(t); inPlaceOK == kernelBefore(release, 5, 11) {
		t.Fatalf("Linux %s: the probe says bpf_sock_from_file for iterators (5.11+) is %v", release, inPlaceOK)
	}
	l4, port := listenTCP4(t)
	connectTo(t, l4)
	l6, err := net.Listen("tcp6", net.JoinHostPort("::1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l6.Close() })
	connectTo(t, l6)
	udp, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })

	byFD := func(a, b owner) int {
		return cmp.Or(cmp.Compare(a.process.PID, b.process.PID), cmp.Compare(a.fd, b.fd))
	}
	helper, err := socketOwnersReading(port, false, types)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(helper, byFD)
	// Two listeners, four ends, one UDP socket.
	if len(helper) != 7 {
		t.Errorf("through the helper, want 7 sockets:\n%+v", helper)
	}
	if !inPlaceOK {
		return
	}
	inPlace, err := socketOwnersReading(port, true, types)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(inPlace, byFD)
	if !slices.Equal(inPlace, helper) {
		t.Errorf("read in place:\n%+v\nthrough the helper:\n%+v", inPlace, helper)
	}
}
