package linux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ring reads a BPF ring buffer map (BPF_MAP_TYPE_RINGBUF) in place, a
// batch at a time. cilium/ebpf's ringbuf.Reader copies each record out
// and publishes its read position after each one; the programs read that
// position on every reserve, so every record moved a cache line between
// the reader's CPU and the producer's. ring hands each record to its
// caller where it lies and publishes its position once every
// publishEvery bytes, at the end of a batch, and before it sleeps (the
// kernel wakes a reader only for a record at the published position).
type ring struct {
	mapFD int
	// consumerPage holds the read position, which user space writes;
	// producerPages the write position and, after it, the data pages,
	// mapped twice in a row so that a record that wraps around reads as
	// one slice.
	consumerPage, producerPages []byte
	consumer, producer          *atomic.Uint64
	data                        []byte
	mask                        uint64
	// pos is how far the reader has read, published or not.
	pos uint64
}

// rings reads the two ring buffers the programs write (bpf/porttrace.bpf.c,
// reserve): events, small enough to stay in the CPU caches, while the
// reader keeps up, and overflow, the room for a burst, from the moment
// events is full until the reader has read overflow to its end. What lies
// in overflow thus came after what lies in events, and what events takes
// again came after what overflow holds: the reader reads events to its end,
// then overflow to its end, and then events again.
type rings struct {
	events, overflow *ring
	// spilling says the reader is reading overflow, events read to its end.
	spilling bool
	// epfd waits for the rings' data and for wakeFD, an eventfd that Wake
	// writes to; wakeMu keeps Close from closing wakeFD under a Wake from
	// another goroutine, which could write to a descriptor reused since.
	epfd, wakeFD int
	wakeMu       sync.Mutex
}

// Ring buffer record header: a 32-bit length whose top bits say the
// record is not committed yet (busy) or was discarded, and 32 bits the
// kernel keeps for itself.
const (
	ringHeaderSize = 8
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
)

var errRingCorrupt = errors.New("ring buffer: a record runs past what the kernel has written")

// newRings maps both rings' pages and sets up the wait for their data.
func newRings(events, overflow *ebpf.Map) (_ *rings, err error) {
	rs := &rings{epfd: -1, wakeFD: -1}
	defer func() {
		if err != nil {
			rs.Close()
		}
	}()
	if rs.events, err = newRing(events); err != nil {
		return nil, err
	}
	if rs.overflow, err = newRing(overflow); err != nil {
		return nil, err
	}
	if rs.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("creating an epoll instance: %w", err)
	}
	if rs.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("creating an eventfd: %w", err)
	}
	for _, fd := range []int{rs.events.mapFD, rs.overflow.mapFD, rs.wakeFD} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(rs.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, fmt.Errorf("waiting on the ring buffers: %w", err)
		}
	}
	return rs, nil
}

// newRing maps m's pages.
func newRing(m *ebpf.Map) (_ *ring, err error) {
	size := int(m.MaxEntries())
	if size == 0 || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d is not a power of two", size)
	}
	r := &ring{mapFD: m.FD(), mask: uint64(size - 1)}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	page := os.Getpagesize()
	if r.consumerPage, err = unix.Mmap(r.mapFD, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping the ring buffer's consumer page: %w", err)
	}
	if r.producerPages, err = unix.Mmap(r.mapFD, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping the ring buffer's data pages: %w", err)
	}
	r.consumer = (*atomic.Uint64)(unsafe.Pointer(&r.consumerPage[0]))
	r.producer = (*atomic.Uint64)(unsafe.Pointer(&r.producerPages[0]))
	r.data = r.producerPages[page:]
	r.pos = r.consumer.Load()
	return r, nil
}

// size is the ring's data size in bytes.
func (r *ring) size() int { return int(r.mask + 1) }

// publishEvery is how many bytes the reader reads before it publishes its
// position in the middle of a batch: often enough that the programs see
// room long before the ring fills, seldom enough that the position's
// cache line stays put.
func (r *ring) publishEvery() uint64 { return (r.mask + 1) / 64 }

// read hands each committed record to handle, in place (the slice is only
// valid during the call), until it has read every record written so far,
// meets one not committed yet, or handle says stop. It returns the bytes
// read, and dry when it read every record written so far.
func (r *ring) read(handle func(raw []byte) (more bool)) (n int, dry bool, err error) {
	start := r.pos
	published := r.pos
	defer r.publish()
	prod := r.producer.Load()
	for r.pos < prod {
		if prod-r.pos < ringHeaderSize {
			return int(r.pos - start), false, errRingCorrupt
		}
		off := r.pos & r.mask
		header := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if header&ringBusyBit != 0 {
			// Committed later: the kernel wakes the reader for it.
			return int(r.pos - start), false, nil
		}
		n := uint64(header &^ (ringBusyBit | ringDiscardBit))
		next := r.pos + ringHeaderSize + (n+7)&^7
		if next > prod {
			return int(r.pos - start), false, errRingCorrupt
		}
		r.pos = next
		if header&ringDiscardBit == 0 {
			body := off + ringHeaderSize
			if !handle(r.data[body : body+n]) {
				return int(r.pos - start), false, nil
			}
		}
		if r.pos-published >= r.publishEvery() {
			r.publish()
			published = r.pos
		}
		if r.pos == prod {
			prod = r.producer.Load()
		}
	}
	return int(r.pos - start), true, nil
}

// pending says records were written the reader has not read.
func (r *ring) pending() bool { return r.producer.Load() != r.pos }

// read hands each committed record to handle in the order the programs
// wrote them, as ring.read does, until both rings are dry, a record is
// not committed yet, or handle says stop. It returns the bytes read.
func (rs *rings) read(handle func(raw []byte) (more bool)) (int, error) {
	total := 0
	for {
		r := rs.events
		if rs.spilling {
			r = rs.overflow
		}
		n, dry, err := r.read(handle)
		total += n
		if err != nil || !dry {
			return total, err
		}
		switch {
		case rs.spilling:
			// Read to its end and published: the programs write to
			// events again, after everything overflow held.
			rs.spilling = false
		case rs.overflow.pending():
			rs.spilling = true
		default:
			return total, nil
		}
	}
}

// size is the size of the ring the programs write while the reader keeps
// up.
func (rs *rings) size() int { return rs.events.size() }

// publish tells the kernel how far the reader has read: that room is
// free again.
func (r *ring) publish() {
	if r.consumer.Load() != r.pos {
		r.consumer.Store(r.pos)
	}
}

// wait returns when a ring holds a record not read yet, Wake was
// called, or deadline passed (zero: none). It says whether Wake was
// called.
func (rs *rings) wait(deadline time.Time) (woken bool, err error) {
	rs.events.publish()
	rs.overflow.publish()
	timeout := -1
	if !deadline.IsZero() {
		// Rounded up: a wait that ends early would find its deadline not
		// yet come.
		timeout = int(max(time.Until(deadline)+time.Millisecond-1, 0) / time.Millisecond)
	}
	var events [3]unix.EpollEvent
	for {
		n, err := unix.EpollWait(rs.epfd, events[:], timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("waiting for the ring buffer: %w", err)
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == rs.wakeFD {
				var count [8]byte
				_, _ = unix.Read(rs.wakeFD, count[:])
				woken = true
			}
		}
		return woken, nil
	}
}

// Wake makes the wait under way, or the next, return at once. Safe from
// any goroutine.
func (rs *rings) Wake() error {
	rs.wakeMu.Lock()
	defer rs.wakeMu.Unlock()
	if rs.wakeFD < 0 {
		return os.ErrClosed
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(rs.wakeFD, one[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("waking the ring buffers' reader: %w", err)
	}
	return nil
}

// Close closes what wait waits on and unmaps the rings.
func (rs *rings) Close() error {
	rs.wakeMu.Lock()
	defer rs.wakeMu.Unlock()
	var errs []error
	for _, fd := range []int{rs.epfd, rs.wakeFD} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	rs.epfd, rs.wakeFD = -1, -1
	for _, r := range []*ring{rs.events, rs.overflow} {
		if r != nil {
			errs = append(errs, r.Close())
		}
	}
	return errors.Join(errs...)
}

// Close unmaps the ring.
func (r *ring) Close() error {
	var errs []error
	for _, b := range [][]byte{r.consumerPage, r.producerPages} {
		if b != nil {
			errs = append(errs, unix.Munmap(b))
		}
	}
	r.consumerPage, r.producerPages, r.data = nil, nil, nil
	return errors.Join(errs...)
}
