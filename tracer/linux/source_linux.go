package linux

import (
	"github.com/porttrace/porttrace/tracer"

	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/bpf"
)

// batchInterval is the least time between two reads of the ring buffer
// while events flow: they are handled, and the output flushed, in batches
// of at most this long, one wakeup per batch. Otherwise the source sleeps
// until the next event, which wakes it at once: the programs leave the
// wakeup to the kernel, which wakes the reader for a record only when the
// reader had read everything before it.
//
// Each batch wakes the reader, which takes a CPU from the traffic it
// traces: on a 2-core machine under a storm, batches of 5 ms kept 0.93 of
// the untraced rate, of 10 ms 0.95, of 20-25 ms 0.955-0.97 (alternated by
// hand, 12-20 rounds each). A line still shows within 25 ms of its event,
// less than a frame of a film.
const batchInterval = 25 * time.Millisecond

// clockCheckEvery is how many records Run handles between looks at the
// clock within a batch.
const clockCheckEvery = 256

// stopDrainLimit bounds how long a stopped source goes on reading what the
// programs wrote before the stop, under a storm that keeps writing.
const stopDrainLimit = time.Second

// busyFraction of the ring buffer read in one batch makes the reader read
// again at once rather than let the next batch gather: the ring the
// programs write while the reader keeps up must not fill up while it
// pauses, or they write to the overflow ring, out of the caches.
const busyFraction = 16

// cachedRingSize is the size of that ring (bpf/porttrace.bpf.c, events):
// small enough to stay in the caches of a small machine, as large as a
// storm writes in some 80 ms, three batches.
const cachedRingSize = 2 << 20

// deliveryLag is how far an event's time may be behind the events already
// read when it is read: a program stamps its event just after reserving
// its room, and the reader meets events in the order of their rooms, so an
// event stamped before another may come after it, by the moments between
// reserving and stamping (microseconds; more where an interrupt, or the
// host stopping a virtual CPU, comes between). Ticks report the time up to
// which every event has been delivered: that of the latest event read, or
// when the ring ran dry the time the read began, less this.
const deliveryLag = 10 * time.Millisecond

// LinuxSource reads porttrace's eBPF programs' ring buffers.
type LinuxSource struct {
	coll  *ebpf.Collection
	links []link.Link
	rings *rings
	hooks []string
	// rescuers are the programs that make up for the runs the kernel
	// skips of the program before them.
	rescuers     []string
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
	_ tracer.Waker        = (*LinuxSource)(nil)
)

// Open loads and attaches porttrace's eBPF programs, choosing each hook from
// what the kernel offers.
func Open(cfg tracer.Config) (*LinuxSource, error) {
	return open(cfg, defaultHooks, inPlaceReads{sock: true, task: true, cast: true})
}

// open is Open with the hook table to choose from, which tests narrow (to
// force one alternative of a hook, say), and the reads in place to allow
// where the kernel has them (tests compare them with the helper's).
func open(cfg tracer.Config, table []hook, allowInPlace inPlaceReads) (src *LinuxSource, err error) {
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	liftMemlock()
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
	k.inPlace.sock = k.inPlace.sock && allowInPlace.sock
	k.inPlace.task = k.inPlace.task && allowInPlace.task
	k.inPlace.cast = k.inPlace.cast && allowInPlace.cast
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
	s.coll, err = ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Cache: k.types})
	if err != nil {
		return nil, fmt.Errorf("loading eBPF programs: %w", memlockHint(err))
	}

	firsts := map[bpf.PorttraceRescuedHook]*ebpf.Program{}
	for _, c := range chosen {
		for _, a := range c.alt.progs {
			if a.rescued {
				firsts[a.hook] = s.coll.Programs[a.prog]
			}
		}
	}
	if line := locateGuards(k, s.coll, firsts); line != "" {
		s.hooks = append(s.hooks, line)
		cfg.Verbosef("%s", line)
	}

	for _, c := range chosen {
		for _, a := range c.alt.progs {
			if a.rescue {
				s.rescuers = append(s.rescuers, a.prog)
			}
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
	s.hooks = append(s.hooks, k.inPlace.String())
	cfg.Verbosef("%s", k.inPlace)

	if s.rings, err = newRings(s.coll.Maps[bpf.PorttraceMapEvents], s.coll.Maps[bpf.PorttraceMapOverflow]); err != nil {
		return nil, err
	}
	var wall unix.Timespec
	s.startMonoNs = monotonicNs()
	s.startTime = time.Now()
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &wall)
	s.monoToWallNs = wall.Nano() - s.startMonoNs
	return s, nil
}

// targets lists an alternative's targets, saying whether runs the kernel
// skips are made up for.
func targets(alt alternative) string {
	var out []string
	rescued := false
	for _, a := range alt.progs {
		if a.rescue {
			rescued = true
			continue
		}
		out = append(out, a.target)
	}
	s := strings.Join(out, ",")
	if rescued {
		s += " (each with a second program for the runs the kernel skips)"
	}
	return s
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
	spec.Maps[bpf.PorttraceMapEvents].MaxEntries = uint32(min(ringSize, cachedRingSize))
	spec.Maps[bpf.PorttraceMapOverflow].MaxEntries = uint32(ringSize)

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
		bpf.PorttraceVarBtfSockReads:       k.inPlace.sock,
		bpf.PorttraceVarTaskReads:          k.inPlace.task,
		bpf.PorttraceVarCastReads:          k.inPlace.cast,
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
// buffer full (counted per CPU by the programs, after the port filter, so
// these concern the watched ports), or the kernel skips a program's run
// because a run of it is already under way on that CPU (a softirq
// interrupting it), which the kernel counts as the program's recursion
// misses (5.12+), without saying for which port. The runs a hook's second
// program made up for are not lost; the second programs' own misses lose
// nothing, as the first ran.
func (s *LinuxSource) Lost() tracer.Lost {
	lost := tracer.Lost{Dropped: s.sumPerCPU(bpf.PorttraceMapLost), Undecodable: s.undecodable.Load()}
	// Read before the misses, which a rescue follows, never precedes.
	rescued := s.sumPerCPU(bpf.PorttraceMapRescued)
	var missed uint64
	for name, prog := range s.coll.Programs {
		if slices.Contains(s.rescuers, name) {
			continue
		}
		if stats, err := prog.Stats(); err == nil {
			missed += stats.RecursionMisses
		}
	}
	// A kernel that guards but does not count would leave rescues
	// without their misses.
	lost.Skipped = missed - min(missed, rescued)
	return lost
}

// sumPerCPU adds up a one-counter per-CPU array.
func (s *LinuxSource) sumPerCPU(name string) uint64 {
	var perCPU []uint64
	var sum uint64
	if err := s.coll.Maps[name].Lookup(uint32(0), &perCPU); err == nil {
		for _, n := range perCPU {
			sum += n
		}
	}
	return sum
}

// nowNs is the current time on the events' clock, without a system call.
func (s *LinuxSource) nowNs() int64 {
	return s.startMonoNs + int64(time.Since(s.startTime)) + s.monoToWallNs
}

// Run implements Source. It reads a batch of events, ticks the handler,
// and then either pauses so that the next batch gathers (when this batch
// came less than batchInterval after the one before: events flow) or
// waits for the next event, the handler's deadline or a Wake, whichever
// comes first: an idle watch costs no wakeups, a sparse event one.
func (s *LinuxSource) Run(ctx context.Context, h tracer.Handler) error {
	// A wake ends a wait at once, so that cancellation is seen.
	stop := context.AfterFunc(ctx, func() { _ = s.rings.Wake() })
	defer stop()
	pause := time.NewTimer(batchInterval)
	defer pause.Stop()
	busy := s.rings.size() / busyFraction

	var ev tracer.Event
	records := 0
	var woke time.Time // when the last batch began
	// latestNs is the time of the latest event handled; cut says the last
	// read stopped before the ring ran dry.
	var latestNs int64
	cut := false
	handle := func(raw []byte) bool {
		if err := decodeEvent(raw, s.monoToWallNs, &ev); err != nil {
			s.undecodable.Add(1)
			return true
		}
		latestNs = max(latestNs, ev.TimeNs)
		h.Handle(&ev)
		// A storm that outpaces the reader never lets the ring run dry:
		// the ticks (held lines, holder lookups, the index, the output,
		// Ctrl-C) must come on time anyway.
		records++
		cut = records%clockCheckEvery == 0 && time.Since(woke) >= batchInterval
		return !cut
	}
	// flowing says the last batch was read after a pause, or came less
	// than batchInterval after the one before it.
	flowing := false
	next := tracer.NoDeadline
	var deliveredNs int64 // see deliveryLag
	// The first read ticks the handler whatever it finds: its deadlines,
	// such as that of a snapshot waiting for the events older than it,
	// start there.
	waitFirst, ticked := false, false
	var stopping time.Time // when the stop was first seen
	var until time.Time    // zero: until an event comes
	for {
		woken := false
		if waitFirst {
			var err error
			if woken, err = s.rings.wait(until); err != nil {
				return err
			}
		}
		previous := woke
		woke = time.Now()
		readNs := s.nowNs()
		cut = false
		n, err := s.rings.read(handle)
		if err != nil {
			return fmt.Errorf("reading ring buffer: %w", err)
		}
		if n == 0 {
			woke = previous
		}
		if cut {
			deliveredNs = max(deliveredNs, min(latestNs, readNs)-int64(deliveryLag))
		} else {
			deliveredNs = max(deliveredNs, readNs-int64(deliveryLag))
		}
		// A read that found nothing needs no tick, unless a deadline
		// has come or Wake asked for one.
		if n > 0 || woken || !ticked || (next != tracer.NoDeadline && deliveredNs >= next) || ctx.Err() != nil {
			next, ticked = h.Tick(deliveredNs), true
		}
		if ctx.Err() != nil {
			// Stopped: what the programs wrote before the stop is read
			// first. A read cut for the clock left some; a storm that
			// never lets the ring run dry is cut off at stopDrainLimit.
			if stopping.IsZero() {
				stopping = time.Now()
			}
			if !cut || time.Since(stopping) >= stopDrainLimit {
				return nil
			}
			waitFirst = false
			continue
		}
		flowing = n > 0 && (flowing || woke.Sub(previous) < batchInterval)
		switch {
		case !flowing:
			waitFirst, until = true, s.waitUntil(next)
			continue
		case n < busy:
			pause.Reset(batchInterval - time.Since(woke))
			select {
			case <-pause.C:
			case <-ctx.Done():
			}
		}
		waitFirst = false
	}
}

// Wake implements tracer.Waker: the wait under way, or the next, returns
// at once, and Run ticks its handler.
func (s *LinuxSource) Wake() { _ = s.rings.Wake() }

// waitUntil is when a read must stop waiting for events to tick the
// handler at its deadline (on the events' clock): once every event up to
// the deadline has been delivered. Zero for never.
func (s *LinuxSource) waitUntil(deadlineNs int64) time.Time {
	if deadlineNs == tracer.NoDeadline {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(max(deadlineNs+int64(deliveryLag)-s.nowNs(), 0)))
}

// Close implements Source: it detaches every program and frees the maps.
func (s *LinuxSource) Close() error {
	var errs []error
	if s.rings != nil {
		errs = append(errs, s.rings.Close())
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
