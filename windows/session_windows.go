package windows

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/windows/internal/winapi"
)

const (
	// flushInterval bounds how long an event sits in a half-full ETW
	// buffer before the consumer sees it.
	flushInterval = 200 * time.Millisecond
	// bufferSizeKB is the size of each of the session's buffers.
	bufferSizeKB = 64
)

// buffersFor is how many session buffers make up totalBytes, 0 leaving
// the choice to ETW.
func buffersFor(totalBytes int) uint32 {
	const bufferBytes = bufferSizeKB << 10
	if totalBytes <= 0 {
		return 0
	}
	return uint32(min((totalBytes+bufferBytes-1)/bufferBytes, 1<<16))
}

// traceProperties is an EVENT_TRACE_PROPERTIES followed by room for the
// session name, which StartTrace and ControlTrace copy there.
type traceProperties struct {
	winapi.EventTraceProperties
	loggerName [1024]uint16
}

func newTraceProperties() *traceProperties {
	p := new(traceProperties)
	p.Wnode.BufferSize = uint32(unsafe.Sizeof(*p))
	p.Wnode.Flags = winapi.WnodeFlagTracedGUID
	p.LoggerNameOffset = uint32(unsafe.Offsetof(p.loggerName))
	return p
}

// lost is what the kernel dropped: events, and whole buffers that no
// consumer read in time. A lost buffer counts as one, though it held many.
func (p *traceProperties) lost() uint64 {
	return uint64(p.EventsLost) + uint64(p.RealTimeBuffersLost)
}

// eventIDFilter is an EVENT_FILTER_EVENT_ID for the TCPIP event ids.
type eventIDFilter struct {
	filterIn uint8
	_        uint8
	count    uint16
	ids      [len(tcpipEventIDs)]uint16
}

// tcpipFilter is package-level so that it never moves: EnableTraceEx2
// finds it through an integer, which the garbage collector does not follow.
var tcpipFilter = eventIDFilter{filterIn: 1, count: uint16(len(tcpipEventIDs)), ids: tcpipEventIDs}

// session is a real-time ETW session that porttrace controls and
// consumes.
type session struct {
	name   string
	name16 *uint16
	// maxBuffers bounds the session's buffers, 0 leaving it to ETW.
	maxBuffers uint32
	// logfile lives as long as the session: ETW reads it while
	// ProcessTrace runs.
	logfile winapi.EventTraceLogfile

	mu       sync.Mutex
	control  winapi.TraceHandle // from StartTrace; 0 once stopped
	consumer winapi.TraceHandle // from OpenTrace; invalid until opened and once closed
	// finalLost is the lost count the session reported when it stopped.
	finalLost uint64
}

// startSession starts a real-time session called name whose buffers hold
// up to bufferBytes (0: ETW's default). A session of that name already
// running is taken for one that a porttrace which did not shut down
// cleanly left behind: it is stopped and the start retried once.
func startSession(name string, bufferBytes int) (*session, error) {
	name16, err := xwin.UTF16PtrFromString(name)
	if err != nil {
		return nil, fmt.Errorf("starting etw session %q: %w", name, err)
	}
	s := &session{
		name:       name,
		name16:     name16,
		maxBuffers: buffersFor(bufferBytes),
		consumer:   winapi.InvalidProcessTraceHandle,
	}
	err = s.start()
	if errors.Is(err, xwin.ERROR_ALREADY_EXISTS) {
		if _, stopErr := controlTrace(0, name16, winapi.EventTraceControlStop); stopErr != nil {
			return nil, fmt.Errorf("stopping stale etw session %q: %w", name, stopErr)
		}
		err = s.start()
	}
	if err != nil {
		return nil, fmt.Errorf("starting etw session %q: %w", name, err)
	}
	return s, nil
}

func (s *session) start() error {
	p := newTraceProperties()
	// Performance-counter stamps are the finest; ProcessTrace converts
	// them to system time.
	p.Wnode.ClientContext = winapi.ClientContextQPC
	p.LogFileMode = winapi.EventTraceRealTimeMode | winapi.EventTraceUseMsFlushTimer
	p.FlushTimer = uint32(flushInterval.Milliseconds())
	p.BufferSize = bufferSizeKB
	p.MaximumBuffers = s.maxBuffers
	return winapi.StartTrace(&s.control, s.name16, &p.EventTraceProperties)
}

// enable turns provider on in the session for the events that have any of
// keywords and pass filter.
func (s *session) enable(provider *xwin.GUID, keywords uint64, filter *eventIDFilter) error {
	desc := winapi.EventFilterDescriptor{
		Ptr:  uint64(uintptr(unsafe.Pointer(filter))),
		Size: uint32(unsafe.Offsetof(filter.ids)) + 2*uint32(filter.count),
		Type: winapi.EventFilterTypeEventID,
	}
	params := winapi.EnableTraceParameters{
		Version:          winapi.EnableTraceParametersVersion2,
		EnableFilterDesc: &desc,
		FilterDescCount:  1,
	}
	return winapi.EnableTraceEx2(s.control, provider, winapi.EventControlCodeEnableProvider,
		winapi.TraceLevelInformation, keywords, 0, 0, &params)
}

// captureState asks provider to describe what already exists: for TCPIP,
// a TcpConnectionRundown per connection.
func (s *session) captureState(provider *xwin.GUID, keywords uint64) error {
	return winapi.EnableTraceEx2(s.control, provider, winapi.EventControlCodeCaptureState,
		winapi.TraceLevelInformation, keywords, 0, 0, nil)
}

// open makes the session consumable: ETW will call callback with each
// EVENT_RECORD, whose UserContext is context.
func (s *session) open(callback, context uintptr) error {
	s.logfile = winapi.EventTraceLogfile{
		LoggerName:          s.name16,
		ProcessTraceMode:    winapi.ProcessTraceModeRealTime | winapi.ProcessTraceModeEventRecord,
		EventRecordCallback: callback,
		Context:             context,
	}
	h, err := winapi.OpenTrace(&s.logfile)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.consumer = h
	s.mu.Unlock()
	return nil
}

// process delivers events to the callback until the consumer is closed or
// the session stops. ProcessTrace calls back on the thread that called it
// and holds that thread for the session's life, so it gets one of its own.
func (s *session) process() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s.mu.Lock()
	h := s.consumer
	s.mu.Unlock()
	return winapi.ProcessTrace(&h, 1, nil, nil)
}

// closeConsumer makes ProcessTrace return once it has delivered the buffer
// at hand.
func (s *session) closeConsumer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.consumer == winapi.InvalidProcessTraceHandle {
		return nil
	}
	err := winapi.CloseTrace(s.consumer)
	s.consumer = winapi.InvalidProcessTraceHandle
	// ERROR_CTX_CLOSE_PENDING says ProcessTrace was still busy: it will
	// return when done.
	if err != nil && !errors.Is(err, xwin.ERROR_CTX_CLOSE_PENDING) {
		return fmt.Errorf("closing etw consumer of %q: %w", s.name, err)
	}
	return nil
}

// stop stops the session, which also ends ProcessTrace, and keeps its
// final lost count.
func (s *session) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.control == 0 {
		return nil
	}
	p, err := controlTrace(s.control, nil, winapi.EventTraceControlStop)
	s.control = 0
	if err != nil {
		return fmt.Errorf("stopping etw session %q: %w", s.name, err)
	}
	s.finalLost = p.lost()
	return nil
}

// flush has ETW hand the consumer what its buffers hold now, rather than
// at the next flush timer: what happened before a watch stops.
func (s *session) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.control == 0 {
		return nil
	}
	if _, err := controlTrace(s.control, nil, winapi.EventTraceControlFlush); err != nil {
		return fmt.Errorf("flushing etw session %q: %w", s.name, err)
	}
	return nil
}

// lost returns how many events the session dropped so far.
func (s *session) lost() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.control == 0 {
		return s.finalLost, nil
	}
	p, err := controlTrace(s.control, nil, winapi.EventTraceControlQuery)
	if err != nil {
		return 0, fmt.Errorf("querying etw session %q: %w", s.name, err)
	}
	return p.lost(), nil
}

// controlTrace runs a ControlTrace command on the session given by handle
// or, when handle is 0, by name.
func controlTrace(handle winapi.TraceHandle, name *uint16, command uint32) (*traceProperties, error) {
	p := newTraceProperties()
	return p, winapi.ControlTrace(handle, name, &p.EventTraceProperties, command)
}
