package windows

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/windows/internal/winapi"
)

// sessionName is the real-time ETW session porttrace owns.
const sessionName = "porttrace"

// tcpipProvider is Microsoft-Windows-TCPIP.
var tcpipProvider = xwin.GUID{
	Data1: 0x2f07e2ee, Data2: 0x15db, Data3: 0x40f1,
	Data4: [8]byte{0x90, 0xef, 0x9d, 0x7b, 0xa2, 0x82, 0x18, 0x8a},
}

// TCPIP keywords: TcpipTcb is on every event porttrace decodes but 1002
// TcpRequestConnect, which has Endpoint. The event id filter drops the rest
// of what they select before it leaves the kernel.
const (
	keywordTcpipTcb = 0x4
	keywordEndpoint = 0x400
	tcpipKeywords   = keywordTcpipTcb | keywordEndpoint
)

const (
	// eventQueueLen is how many decoded events may wait between the ETW
	// thread and Run. When it is full the ETW thread waits, and the
	// kernel counts what overflows its buffers as lost.
	eventQueueLen = 1024
	// tickInterval is how often Run ticks the handler and expires held
	// state changes.
	tickInterval = 100 * time.Millisecond
	// deliveryLag is how far behind the clock ETW's delivery may be: the
	// flush interval, and a margin for ProcessTrace to hand buffers over.
	// Ticks report the clock minus this, as the time up to which
	// everything has been delivered.
	deliveryLag = flushInterval + 300*time.Millisecond
)

// ErrNotElevated is what Open returns to a process without Administrator
// rights, which ETW kernel providers require.
var ErrNotElevated = errors.New("needs Administrator: run porttrace from an elevated prompt")

// CheckAdmin returns ErrNotElevated unless the process runs elevated.
func CheckAdmin() error {
	if !xwin.GetCurrentProcessToken().IsElevated() {
		return ErrNotElevated
	}
	return nil
}

// Source is the Windows tracer.Source: a real-time ETW session with
// Microsoft-Windows-TCPIP enabled.
type Source struct {
	cfg     tracer.Config
	session *session
	// id names the Source to the ETW callback, which gets it back as the
	// record's UserContext.
	id    uintptr
	hooks []string

	// events carries decoded events from the ETW thread to Run.
	events chan tracer.Event
	// runDone is closed when Run stops reading events, so that the ETW
	// thread does not wait for it forever.
	runDone chan struct{}
	// decoded is the ETW thread's decoding slot and received Run's
	// receiving slot: reused so that no event allocates.
	decoded  tracer.Event
	received tracer.Event

	decodeErrors atomic.Uint64
	closed       atomic.Bool
	closeOnce    sync.Once
	closeErr     error
}

// Open starts porttrace's ETW session. It needs Administrator rights; a
// session that a previous porttrace left behind is replaced.
func Open(cfg tracer.Config) (*Source, error) {
	if err := CheckAdmin(); err != nil {
		return nil, err
	}
	return open(cfg, sessionName)
}

func open(cfg tracer.Config, name string) (_ *Source, err error) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		return nil, errors.New("etw tracing needs a 64-bit build of porttrace")
	}
	sess, err := startSession(name, cfg.BufferSize)
	if err != nil {
		return nil, err
	}
	s := &Source{
		cfg:     cfg,
		session: sess,
		events:  make(chan tracer.Event, eventQueueLen),
		runDone: make(chan struct{}),
	}
	s.id = registerSource(s)
	defer func() {
		if err != nil {
			unregisterSource(s.id)
			err = errors.Join(err, sess.stop())
		}
	}()
	if err := sess.enable(&tcpipProvider, tcpipKeywords, &tcpipFilter); err != nil {
		return nil, fmt.Errorf("enabling Microsoft-Windows-TCPIP in etw session %q: %w", name, err)
	}
	if err := sess.open(recordCallback, s.id); err != nil {
		return nil, fmt.Errorf("opening etw session %q: %w", name, err)
	}
	s.hooks = []string{tcpipHook()}
	s.logf("etw: %s", s.hooks[0])
	return s, nil
}

func tcpipHook() string {
	ids := make([]string, len(tcpipEventIDs))
	for i, id := range tcpipEventIDs {
		ids[i] = strconv.Itoa(int(id))
	}
	return fmt.Sprintf("etw Microsoft-Windows-TCPIP keywords %#x events %s: "+
		"TcpTcbStateChange joined by Tcb to the events that name its endpoints and process",
		tcpipKeywords, strings.Join(ids, ","))
}

// Run delivers events to h until ctx is done or the session ends. Once ctx
// is done it delivers what ETW holds from before first (for at most
// stopDrainLimit), as the Linux source reads its ring dry.
func (s *Source) Run(ctx context.Context, h tracer.Handler) error {
	joiner := newTCBJoiner(&s.cfg, s.deliverTo(h))
	processed := make(chan error, 1)
	go func() { processed <- s.session.process() }()
	// Asked for once the consumer runs, so the rundown lands in buffers
	// that are being read.
	if err := s.session.captureState(&tcpipProvider, tcpipKeywords); err != nil {
		s.logf("etw: no rundown of existing connections: %v", err)
	}
	ticker := time.NewTicker(tickInterval)
	defer ticker.Stop()
	defer s.logCounts(joiner)
	for {
		select {
		case s.received = <-s.events:
			joiner.push(&s.received)
		case <-ticker.C:
			upTo := time.Now().Add(-deliveryLag).UnixNano()
			joiner.expire(upTo)
			h.Tick(joiner.deliveredUpTo(upTo))
		case err := <-processed:
			close(s.runDone)
			return s.processEnded(err)
		case <-ctx.Done():
			// What happened before the stop is handed on first: the
			// events queued, and those still in ETW's buffers.
			stopNs, quiet := time.Now().UnixNano(), stopQuiet
			if err := s.session.flush(); err != nil {
				s.logf("etw: %v", err)
				quiet = deliveryLag
			}
			drainAtStop(s.events, &s.received, joiner.push, stopNs, quiet, stopDrainLimit)
			close(s.runDone)
			return s.stopProcessing(processed)
		}
	}
}

// processEnded explains why ProcessTrace returned on its own.
func (s *Source) processEnded(err error) error {
	switch {
	case s.closed.Load():
		return nil
	case err != nil:
		return fmt.Errorf("processing etw session %q: %w", s.session.name, err)
	}
	return fmt.Errorf("etw session %q stopped", s.session.name)
}

// stopProcessing closes the consumer and waits for ProcessTrace to
// return, but not forever: a consumer that cannot be closed is left
// running rather than hanging the caller.
func (s *Source) stopProcessing(processed <-chan error) error {
	if err := s.session.closeConsumer(); err != nil {
		return err
	}
	select {
	case <-processed:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("etw session %q: ProcessTrace did not return after CloseTrace", s.session.name)
	}
}

func (s *Source) deliverTo(h tracer.Handler) func(*tracer.Event) {
	names := newNameCache()
	return func(ev *tracer.Event) {
		if ev.PID != 0 {
			ev.Comm = names.comm(ev.PID, ev.TimeNs)
		}
		h.Handle(ev)
	}
}

func (s *Source) logCounts(j *tcbJoiner) {
	if n := s.decodeErrors.Load(); n > 0 {
		s.logf("etw: %d TCPIP events did not decode", n)
	}
	if j.unjoined > 0 {
		s.logf("etw: %d state changes dropped: their connection's endpoints never came", j.unjoined)
	}
}

// Lost returns how many events the ETW session dropped, counting a lost
// buffer as one.
func (s *Source) Lost() tracer.Lost {
	n, err := s.session.lost()
	if err != nil {
		s.logf("etw: %v", err)
	}
	return tracer.Lost{Dropped: n}
}

// Hooks describes the provider enabled.
func (s *Source) Hooks() []string { return s.hooks }

// Close stops the session. Run, if running, returns nil.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = errors.Join(s.session.closeConsumer(), s.session.stop())
		unregisterSource(s.id)
	})
	return s.closeErr
}

func (s *Source) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// onRecord decodes one EVENT_RECORD on the ETW thread and passes it to
// Run.
func (s *Source) onRecord(rec *winapi.EventRecord) {
	hdr := &rec.EventHeader
	if hdr.ProviderID != tcpipProvider {
		return // the session's own header event
	}
	var payload []byte
	if rec.UserData != nil {
		payload = unsafe.Slice((*byte)(rec.UserData), rec.UserDataLength)
	}
	ev := &s.decoded
	*ev = tracer.Event{}
	if err := decodeTCPIP(hdr.EventDescriptor.ID, pointerSize(hdr.Flags), payload, ev); err != nil {
		if !errors.Is(err, errUnknownEvent) {
			s.decodeErrors.Add(1)
		}
		return
	}
	ev.TimeNs = filetimeToUnixNs(hdr.TimeStamp)
	if ev.Kind == tracer.KindState {
		// Whoever was on the CPU, as on Linux: the correlator decides
		// whether to trust it.
		ev.PID = hdr.ProcessID
	}
	select {
	case s.events <- *ev:
	case <-s.runDone:
	}
}

// recordCallback is the one EventRecordCallback for every Source:
// callbacks are a limited resource that is never freed.
var recordCallback = xwin.NewCallback(func(rec *winapi.EventRecord) uintptr {
	if s := lookupSource(rec.UserContext); s != nil {
		s.onRecord(rec)
	}
	return 0
})

// sources maps the ids handed to ETW as consumer context to their Source:
// ETW must not hold Go pointers.
var (
	sourcesMu    sync.Mutex
	sources      = make(map[uintptr]*Source)
	lastSourceID uintptr
)

func registerSource(s *Source) uintptr {
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	lastSourceID++
	sources[lastSourceID] = s
	return lastSourceID
}

func unregisterSource(id uintptr) {
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	delete(sources, id)
}

func lookupSource(id uintptr) *Source {
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	return sources[id]
}
