package linux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/porttrace/porttrace/bpf"
	"github.com/porttrace/porttrace/tracer"
)

// fakeRing is a ring over Go memory laid out as the kernel's: the data
// twice in a row (the kernel maps its pages twice), records of an 8-byte
// header and a body padded to 8 bytes.
type fakeRing struct {
	r                  ring
	consumer, producer atomic.Uint64
}

func newFakeRing(size int) *fakeRing {
	f := &fakeRing{}
	f.r = ring{data: make([]byte, 2*size), mask: uint64(size - 1), consumer: &f.consumer, producer: &f.producer}
	return f
}

// write puts a record at the producer position with header bits flags,
// and returns its position; commit makes the producer position pass it.
func (f *fakeRing) write(body []byte, flags uint32) uint64 {
	pos := f.producer.Load()
	size := uint64(len(f.r.data) / 2)
	record := make([]byte, ringHeaderSize+(len(body)+7)&^7)
	binary.NativeEndian.PutUint32(record, uint32(len(body))|flags)
	copy(record[ringHeaderSize:], body)
	for i, b := range record {
		at := (pos + uint64(i)) & f.r.mask
		f.r.data[at], f.r.data[at+size] = b, b
	}
	f.producer.Store(pos + uint64(len(record)))
	return pos
}

// commit clears a record's busy bit, as bpf_ringbuf_submit does.
func (f *fakeRing) commit(pos uint64) {
	size := uint64(len(f.r.data) / 2)
	off := pos & f.r.mask
	header := binary.NativeEndian.Uint32(f.r.data[off:]) &^ ringBusyBit
	binary.NativeEndian.PutUint32(f.r.data[off:], header)
	binary.NativeEndian.PutUint32(f.r.data[off+size:], header)
}

func (f *fakeRing) readAll(t *testing.T, stopAfter int) ([]string, int) {
	t.Helper()
	var got []string
	n, _, err := f.r.read(func(raw []byte) bool {
		got = append(got, string(raw))
		return len(got) != stopAfter
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, n
}

func TestRingReadsInPlace(t *testing.T) {
	f := newFakeRing(64)
	f.write([]byte("first"), 0)
	f.write([]byte("discarded"), ringDiscardBit)
	f.write([]byte("third"), 0)
	got, n := f.readAll(t, -1)
	if want := []string{"first", "third"}; !slices.Equal(got, want) || n != 16+24+16 {
		t.Fatalf("read %q, %d bytes; want %q, 56 bytes", got, n, want)
	}
	if f.consumer.Load() != f.producer.Load() {
		t.Errorf("published %d, want %d: a batch read publishes where it ended", f.consumer.Load(), f.producer.Load())
	}

	// 56 bytes in: the next record wraps past the end of the 64 bytes and
	// reads as one slice, as the kernel's double mapping gives it.
	f.write([]byte("wraps around"), 0)
	if got, _ := f.readAll(t, -1); !slices.Equal(got, []string{"wraps around"}) {
		t.Fatalf("read %q across the end", got)
	}
}

func TestRingStopsAtUncommitted(t *testing.T) {
	f := newFakeRing(128)
	f.write([]byte("one"), 0)
	busy := f.write([]byte("two"), ringBusyBit)
	f.write([]byte("three"), 0)
	if got, _ := f.readAll(t, -1); !slices.Equal(got, []string{"one"}) {
		t.Fatalf("read %q, want the record before the uncommitted one", got)
	}
	if f.consumer.Load() != busy {
		t.Fatalf("published %d, want %d: the kernel wakes the reader for a record at the published position", f.consumer.Load(), busy)
	}
	f.commit(busy)
	if got, _ := f.readAll(t, -1); !slices.Equal(got, []string{"two", "three"}) {
		t.Fatalf("read %q after the commit", got)
	}
}

func TestRingStopsWhenAsked(t *testing.T) {
	f := newFakeRing(128)
	for _, body := range []string{"a", "b", "c"} {
		f.write([]byte(body), 0)
	}
	if got, _ := f.readAll(t, 2); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("read %q, want two records", got)
	}
	if got, _ := f.readAll(t, -1); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("read %q, want the rest", got)
	}
}

// TestRingPublishesWithinABatch: a long batch frees the ring's room as it
// goes, not only at its end.
func TestRingPublishesWithinABatch(t *testing.T) {
	f := newFakeRing(4096)
	for range 100 {
		f.write(bytes.Repeat([]byte{'x'}, 32), 0)
	}
	var seen []uint64
	if _, _, err := f.r.read(func([]byte) bool { seen = append(seen, f.consumer.Load()); return true }); err != nil {
		t.Fatal(err)
	}
	if seen[len(seen)-1] == 0 || seen[len(seen)-1] > uint64(40*len(seen)) {
		t.Errorf("published %d by the last record, want some of the %d bytes read before it", seen[len(seen)-1], 40*len(seen))
	}
}

func TestRingCorrupt(t *testing.T) {
	f := newFakeRing(64)
	f.write([]byte("short"), 0)
	f.producer.Store(f.producer.Load() - 8) // the kernel never writes less than a record
	if _, _, err := f.r.read(func([]byte) bool { return true }); !errors.Is(err, errRingCorrupt) {
		t.Errorf("a record past the producer position: %v, want errRingCorrupt", err)
	}
}

// fakeRings are the two rings the programs write, as reserve in
// bpf/porttrace.bpf.c fills them: events while the reader keeps up,
// overflow while events is full and until the reader has read overflow.
type fakeRings struct {
	events, overflow *fakeRing
	rs               rings
}

func newFakeRings() *fakeRings {
	f := &fakeRings{events: newFakeRing(256), overflow: newFakeRing(1024)}
	f.rs = rings{events: &f.events.r, overflow: &f.overflow.r, epfd: -1, wakeFD: -1}
	return f
}

func (f *fakeRings) readAll(t *testing.T, stopAfter int) []string {
	t.Helper()
	var got []string
	if _, err := f.rs.read(func(raw []byte) bool {
		got = append(got, string(raw))
		return len(got) != stopAfter
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestRingsReadInTheOrderWritten: what overflow holds was written after
// what events holds, and what events takes once overflow is read, after
// that; a record not committed in events holds back what overflow holds.
func TestRingsReadInTheOrderWritten(t *testing.T) {
	f := newFakeRings()
	f.events.write([]byte("e1"), 0)
	busy := f.events.write([]byte("e2"), ringBusyBit)
	// events full: the programs write to overflow.
	f.overflow.write([]byte("o1"), 0)
	f.overflow.write([]byte("o2"), 0)
	if got := f.readAll(t, -1); !slices.Equal(got, []string{"e1"}) {
		t.Fatalf("read %q, want what events holds before its uncommitted record", got)
	}
	f.events.commit(busy)
	if got := f.readAll(t, 3); !slices.Equal(got, []string{"e2", "o1", "o2"}) {
		t.Fatalf("read %q, want events to its end, then overflow", got)
	}
	// Stopped while reading overflow, where the programs still write:
	// events, written to again only once overflow is read, waits.
	f.overflow.write([]byte("o3"), 0)
	f.overflow.write([]byte("o4"), 0)
	if got := f.readAll(t, 1); !slices.Equal(got, []string{"o3"}) {
		t.Fatalf("read %q, want the next of overflow", got)
	}
	if f.overflow.consumer.Load() == f.overflow.producer.Load() {
		t.Fatal("overflow published as read to its end with a record left in it")
	}
	if got := f.readAll(t, -1); !slices.Equal(got, []string{"o4"}) {
		t.Fatalf("read %q, want the rest of overflow", got)
	}
	if f.overflow.consumer.Load() != f.overflow.producer.Load() {
		t.Fatal("overflow read to its end and not published so: the programs would not write to events again")
	}
	f.events.write([]byte("e3"), 0)
	if got := f.readAll(t, -1); !slices.Equal(got, []string{"e3"}) {
		t.Fatalf("read %q, want events again", got)
	}
}

// TestKernelOverflowKeepsOrder: while the reader does not read, events fill
// the small ring and go on in the overflow ring; read afterwards, each
// socket's transitions come in the order they happened, none lost.
func TestKernelOverflowKeepsOrder(t *testing.T) {
	needPrivileges(t)
	l, port := listenTCP4(t)
	page := os.Getpagesize()
	src, err := open(tracer.Config{Ports: tracer.Ports{port}, BufferSize: page}, defaultHooks, inPlaceReads{sock: true, task: true, cast: true})
	if err != nil {
		t.Fatalf("opening tracer: %v", err)
	}
	if got := src.rings.size(); got != page {
		src.Close()
		t.Fatalf("the small ring is %d bytes, want the %d asked for the whole", got, page)
	}
	// A connection held open (six events) and enough closed ones (twelve
	// each) to fill the small ring and spill into the other without
	// filling it: with 4 KiB pages, 24 records a ring, three closed ones,
	// the second split between the two.
	perRing := page / (ringHeaderSize + int(unsafe.Sizeof(bpf.PorttraceEvent{})))
	connectTo(t, l)
	var clients []uint16
	for range perRing/12 + 1 {
		c, s := connectTo(t, l)
		clients = append(clients, uint16(c.LocalAddr().(*net.TCPAddr).Port))
		c.Close()
		s.Close()
	}
	waitUntil(t, "the overflow ring to take events", func() bool { return src.rings.overflow.pending() })
	rec := newRecorder()
	runUntilCleanup(t, src, func(ctx context.Context) error { return src.Run(ctx, rec) })

	wantServer := expected(acceptOpen, passiveClose)
	recs := waitFor(t, rec, "every connection to close", func(recs []tracer.Record) bool {
		for _, c := range clients {
			client, _ := lines(recs, c, port)
			server, _ := lines(recs, port, c)
			if len(client) < len(activeClose) || len(server) < len(wantServer) {
				return false
			}
		}
		return true
	})
	for _, c := range clients {
		if got, _ := lines(recs, c, port); !slices.Equal(got, activeClose) {
			t.Errorf("client %d transitions:\n got %v\nwant %v", c, got, activeClose)
		}
		if got, _ := lines(recs, port, c); !slices.Equal(got, wantServer) {
			t.Errorf("server end of %d transitions:\n got %v\nwant %v", c, got, wantServer)
		}
	}
	if lost := src.Lost(); lost.Dropped != 0 {
		t.Errorf("%d events found both rings full, want none", lost.Dropped)
	}
}
