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
	// epfd waits for the ring's data and for wakeFD, an eventfd that Wake
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

// newRing maps m's pages and sets up the wait for its data.
func newRing(m *ebpf.Map) (_ *ring, err error) {
	size := int(m.MaxEntries())
	if size == 0 || size&(size-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d is not a power of two", size)
	}
	r := &ring{mapFD: m.FD(), epfd: -1, wakeFD: -1, mask: uint64(size - 1)}
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

	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("creating an epoll instance: %w", err)
	}
	if r.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("creating an eventfd: %w", err)
	}
	for _, fd := range []int{r.mapFD, r.wakeFD} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, fmt.Errorf("waiting on the ring buffer: %w", err)
		}
	}
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
// read.
func (r *ring) read(handle func(raw []byte) (more bool)) (int, error) {
	start := r.pos
	published := r.pos
	defer r.publish()
	prod := r.producer.Load()
	for r.pos < prod {
		if prod-r.pos < ringHeaderSize {
			return int(r.pos - start), errRingCorrupt
		}
		off := r.pos & r.mask
		header := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if header&ringBusyBit != 0 {
			break // committed later: the kernel wakes the reader for it
		}
		n := uint64(header &^ (ringBusyBit | ringDiscardBit))
		next := r.pos + ringHeaderSize + (n+7)&^7
		if next > prod {
			return int(r.pos - start), errRingCorrupt
		}
		r.pos = next
		if header&ringDiscardBit == 0 {
			body := off + ringHeaderSize
			if !handle(r.data[body : body+n]) {
				break
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
	return int(r.pos - start), nil
}

// publish tells the kernel how far the reader has read: that room is
// free again.
func (r *ring) publish() {
	if r.consumer.Load() != r.pos {
		r.consumer.Store(r.pos)
	}
}

// wait returns when the ring holds a record not read yet, Wake was
// called, or deadline passed (zero: none). It says whether Wake was
// called.
func (r *ring) wait(deadline time.Time) (woken bool, err error) {
	r.publish()
	timeout := -1
	if !deadline.IsZero() {
		// Rounded up: a wait that ends early would find its deadline not
		// yet come.
		timeout = int(max(time.Until(deadline)+time.Millisecond-1, 0) / time.Millisecond)
	}
	var events [2]unix.EpollEvent
	for {
		n, err := unix.EpollWait(r.epfd, events[:], timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("waiting for the ring buffer: %w", err)
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == r.wakeFD {
				var count [8]byte
				_, _ = unix.Read(r.wakeFD, count[:])
				woken = true
			}
		}
		return woken, nil
	}
}

// Wake makes the wait under way, or the next, return at once. Safe from
// any goroutine.
func (r *ring) Wake() error {
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	if r.wakeFD < 0 {
		return os.ErrClosed
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(r.wakeFD, one[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("waking the ring buffer's reader: %w", err)
	}
	return nil
}

// Close unmaps the ring and closes what wait waits on.
func (r *ring) Close() error {
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	var errs []error
	for _, fd := range []int{r.epfd, r.wakeFD} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	r.epfd, r.wakeFD = -1, -1
	for _, b := range [][]byte{r.consumerPage, r.producerPages} {
		if b != nil {
			errs = append(errs, unix.Munmap(b))
		}
	}
	r.consumerPage, r.producerPages, r.data = nil, nil, nil
	return errors.Join(errs...)
}
