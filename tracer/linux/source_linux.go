package linux

import (
	"github.com/porttrace/porttrace/tracer"

	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

// tickInterval is how often the ring buffer is polled and the handler
// ticked (which flushes the output). The programs wake the reader only for
// a batch (wakeupFraction of the ring), so this bounds a line's delay on a
// quiet port, and batches the reading and writing of a busy one.
const tickInterval = 10 * time.Millisecond

// wakeupFraction of the ring buffer waiting makes the programs wake the
// reader before its next poll.
const wakeupFraction = 16

// clockCheckEvery is how many records Run handles between looks at the
// clock. A read's deadline fires only when the ring has run dry, which a
// storm that outpaces the reader never lets it do; the ticks (held lines,
// holder lookups, the published index, the printer's output, Ctrl-C) must
// come on time anyway.
const clockCheckEvery = 256

// LinuxSource reads porttrace's eBPF programs' ring buffer.
type LinuxSource struct {
	coll         *ebpf.Collection
	links        []link.Link
	reader       *ringbuf.Reader
	hooks        []string
	monoToWallNs int64
	startMonoNs  int64
	startTime    time.Time
	// undecodable counts ring buffer records that did not decode; read by
	// Lost from another goroutine.
	undecodable atomic.Uint64
}

var (
	_ tracer.Source       = (*LinuxSource)(nil)
	_ tracer.HolderFinder = (*LinuxSource)(nil)
)

// Open loads and attaches porttrace's eBPF programs, choosing each hook from
// what the kernel offers.
func Open(cfg tracer.Config) (*LinuxSource, error) {
	return open(cfg, defaultHooks)
}

// open is Open with the hook table to choose from, which tests narrow (to
// force one alternative of a hook, say).
func open(cfg tracer.Config, table []hook) (src *LinuxSource, err error) {
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK; later ones
	// to the memory cgroup, and then this does nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK for eBPF maps: %w", err)
	}
	s := &LinuxSource{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	// Without tracefs the hooks that need it are reported as not
	// attached, and the others still work.
	tracefs, mounted, err := EnsureTracefs()
	noTracefs := reason{}
	if err != nil {
		noTracefs = reason{text: err.Error(), permission: errors.Is(err, errTracefsMount)}
	}
	if mounted {
		cfg.Verbosef("mounted tracefs at %s", tracefs)
	}
	k, err := probeKernel(tracefs, noTracefs)
	if err != nil {
		return nil, err
	}
	chosen, notes, err := chooseHooks(k, cfg.Probe, table)
	if err != nil {
		return nil, err
	}
	for _, n := range notes {
		s.hooks = append(s.hooks, n)
		cfg.Warningf("%s", n)
	}

	spec, err := loadSpec(cfg, k, chosen)
	if err != nil {
		return nil, err
	}
	s.coll, err = ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("loading eBPF programs: %w", err)
	}

	for _, c := range chosen {
		for _, a := range c.alt.progs {
			l, err := attach(c.alt, a, s.coll.Programs[a.prog])
			if err != nil {
				return nil, fmt.Errorf("attaching %s/%s: %w", c.alt.form, a.target, err)
			}
			s.links = append(s.links, l)
		}
		line := fmt.Sprintf("%s: %s %s: %s", c.hook.name, c.alt.form, targets(c.alt), c.why)
		s.hooks = append(s.hooks, line)
		cfg.Verbosef("attached %s", line)
	}

	s.reader, err = ringbuf.NewReader(s.coll.Maps[bpf.PorttraceMapEvents])
	if err != nil {
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}
	var wall unix.Timespec
	s.startMonoNs = monotonicNs()
	s.startTime = time.Now()
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &wall)
	s.monoToWallNs = wall.Nano() - s.startMonoNs
	return s, nil
}

func targets(alt alternative) string {
	out := ""
	for i, a := range alt.progs {
		if i > 0 {
			out += ","
		}
		out += a.target
	}
	return out
}

// loadSpec prepares the collection: only the chosen programs, the filters
// and kernel facts as constants, the ring buffer sized.
func loadSpec(cfg tracer.Config, k *kernel, chosen []choice) (*ebpf.CollectionSpec, error) {
	spec, err := bpf.LoadPorttrace()
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, c := range chosen {
		for _, a := range c.alt.progs {
			keep[a.prog] = true
		}
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}

	ringSize := cfg.BufferSize
	if ringSize == 0 {
		ringSize = tracer.DefaultBufferSize
	}
	page := os.Getpagesize()
	if ringSize < page || ringSize&(ringSize-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", ringSize, page)
	}
	spec.Maps[bpf.PorttraceMapEvents].MaxEntries = uint32(ringSize)

	family := uint16(0)
	switch cfg.Family {
	case tracer.FamilyIPv4:
		family = unix.AF_INET
	case tracer.FamilyIPv6:
		family = unix.AF_INET6
	}
	jiffy, err := jiffyNs()
	if err != nil {
		return nil, err
	}
	for name, value := range map[string]any{
		bpf.PorttraceVarFilterPortsOn:      len(cfg.Ports) > 0,
		bpf.PorttraceVarFilterPorts:        portBitmap(cfg.Ports),
		bpf.PorttraceVarFilterFamily:       family,
		bpf.PorttraceVarTwTimerHandlerAddr: k.twTimerHandler,
		bpf.PorttraceVarJiffyNs:            jiffy,
		bpf.PorttraceVarWakeupBytes:        uint64(ringSize / wakeupFraction),
	} {
		if err := spec.Variables[name].Set(value); err != nil {
			return nil, fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return spec, nil
}

// portBitmap is the programs' filter_ports: bit p%8 of byte p/8 set for
// every watched port p.
func portBitmap(ports tracer.Ports) *[65536 / 8]byte {
	var bitmap [65536 / 8]byte
	for _, p := range ports {
		bitmap[p/8] |= 1 << (p % 8)
	}
	return &bitmap
}

// Hooks implements Source.
func (s *LinuxSource) Hooks() []string { return s.hooks }

// Lost implements Source. Events are lost two ways: they find the ring
// buffer full (counted per CPU by the programs), or the kernel skips a
// program's run because a run of it is already under way on that CPU (a
// softirq interrupting it), which the kernel counts as the program's
// recursion misses (5.12+).
func (s *LinuxSource) Lost() tracer.Lost {
	var lost tracer.Lost
	var perCPU []uint64
	if err := s.coll.Maps[bpf.PorttraceMapLost].Lookup(uint32(0), &perCPU); err == nil {
		for _, n := range perCPU {
			lost.Dropped += n
		}
	}
	for _, prog := range s.coll.Programs {
		if stats, err := prog.Stats(); err == nil {
			lost.Skipped += stats.RecursionMisses
		}
	}
	lost.Undecodable = s.undecodable.Load()
	return lost
}

// nowNs is the current time on the events' clock, without a system call.
func (s *LinuxSource) nowNs() int64 {
	return s.startMonoNs + int64(time.Since(s.startTime)) + s.monoToWallNs
}

// Run implements Source.
func (s *LinuxSource) Run(ctx context.Context, h tracer.Handler) error {
	// Flush wakes a blocked read so that cancellation is seen at once.
	stop := context.AfterFunc(ctx, func() { _ = s.reader.Flush() })
	defer stop()

	var rec ringbuf.Record
	var ev tracer.Event
	deadline := time.Now().Add(tickInterval)
	s.reader.SetDeadline(deadline)
	// tick ticks the handler and says whether to go on.
	tick := func() bool {
		h.Tick(s.nowNs())
		deadline = time.Now().Add(tickInterval)
		s.reader.SetDeadline(deadline)
		return ctx.Err() == nil
	}
	for n := 1; ; n++ {
		err := s.reader.ReadInto(&rec)
		switch {
		case err == nil:
			if err := decodeEvent(rec.RawSample, s.monoToWallNs, &ev); err != nil {
				s.undecodable.Add(1)
				continue
			}
			h.Handle(&ev)
			if n%clockCheckEvery == 0 && time.Now().After(deadline) && !tick() {
				return nil
			}
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			if !tick() {
				return nil
			}
		default:
			return fmt.Errorf("reading ring buffer: %w", err)
		}
	}
}

// Close implements Source: it detaches every program and frees the maps.
func (s *LinuxSource) Close() error {
	var errs []error
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
	s.links = nil
	if s.coll != nil {
		s.coll.Close()
	}
	return errors.Join(errs...)
}
