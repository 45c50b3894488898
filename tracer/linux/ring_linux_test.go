package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
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
	n, err := f.r.read(func(raw []byte) bool {
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
	if _, err := f.r.read(func([]byte) bool { seen = append(seen, f.consumer.Load()); return true }); err != nil {
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
	if _, err := f.r.read(func([]byte) bool { return true }); !errors.Is(err, errRingCorrupt) {
		t.Errorf("a record past the producer position: %v, want errRingCorrupt", err)
	}
}
