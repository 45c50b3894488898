package winapi

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

// TraceHandle is a TRACEHANDLE: a session handle from StartTrace or a
// consumer handle from OpenTrace.
type TraceHandle uint64

// InvalidProcessTraceHandle is what OpenTrace returns on failure.
const InvalidProcessTraceHandle = ^TraceHandle(0)

// Values from evntrace.h, evntcons.h and evntprov.h.
const (
	WnodeFlagTracedGUID = 0x00020000
	// ClientContextQPC stamps events with the performance counter, which
	// ProcessTrace converts to system time for the consumer.
	ClientContextQPC = 1

	EventTraceRealTimeMode = 0x00000100
	// EventTraceUseMsFlushTimer makes FlushTimer count milliseconds.
	EventTraceUseMsFlushTimer = 0x00000010

	EventTraceControlQuery = 0
	EventTraceControlStop  = 1
	EventTraceControlFlush = 3

	ProcessTraceModeRealTime    = 0x00000100
	ProcessTraceModeEventRecord = 0x10000000

	EventControlCodeEnableProvider = 1
	EventControlCodeCaptureState   = 2

	TraceLevelInformation = 4

	EnableTraceParametersVersion2 = 2
	EventFilterTypeEventID        = 0x80000200
)

// Values from iprtrmib.h and udpmib.h.
const (
	TCPTableOwnerPIDAll = 5
	UDPTableOwnerPID    = 1
)

// WnodeHeader is WNODE_HEADER.
type WnodeHeader struct {
	BufferSize        uint32
	ProviderID        uint32
	HistoricalContext uint64
	TimeStamp         int64 // union with CountLost and KernelHandle
	GUID              windows.GUID
	ClientContext     uint32
	Flags             uint32
}

// EventTraceProperties is EVENT_TRACE_PROPERTIES. The session and log file
// names follow it in the same buffer, at LoggerNameOffset and
// LogFileNameOffset.
type EventTraceProperties struct {
	Wnode               WnodeHeader
	BufferSize          uint32
	MinimumBuffers      uint32
	MaximumBuffers      uint32
	MaximumFileSize     uint32
	LogFileMode         uint32
	FlushTimer          uint32
	EnableFlags         uint32
	AgeLimit            int32
	NumberOfBuffers     uint32
	FreeBuffers         uint32
	EventsLost          uint32
	BuffersWritten      uint32
	LogBuffersLost      uint32
	RealTimeBuffersLost uint32
	LoggerThreadID      windows.Handle
	LogFileNameOffset   uint32
	LoggerNameOffset    uint32
}

// EventTraceLogfile is EVENT_TRACE_LOGFILEW. The members porttrace never
// reads (the EVENT_TRACE of the current event and the TRACE_LOGFILE_HEADER)
// are opaque bytes of their 64-bit sizes.
type EventTraceLogfile struct {
	LogFileName         *uint16
	LoggerName          *uint16
	CurrentTime         int64
	BuffersRead         uint32
	ProcessTraceMode    uint32
	CurrentEvent        [88]byte
	LogfileHeader       [280]byte
	BufferCallback      uintptr
	BufferSize          uint32
	Filled              uint32
	EventsLost          uint32
	EventRecordCallback uintptr
	IsKernelTrace       uint32
	Context             uintptr
}

// EventDescriptor is EVENT_DESCRIPTOR.
type EventDescriptor struct {
	ID      uint16
	Version uint8
	Channel uint8
	Level   uint8
	Opcode  uint8
	Task    uint16
	Keyword uint64
}

// EventHeader is EVENT_HEADER.
type EventHeader struct {
	Size            uint16
	HeaderType      uint16
	Flags           uint16
	EventProperty   uint16
	ThreadID        uint32
	ProcessID       uint32
	TimeStamp       int64
	ProviderID      windows.GUID
	EventDescriptor EventDescriptor
	ProcessorTime   uint64
	ActivityID      windows.GUID
}

// EventRecord is EVENT_RECORD. The pointers are unsafe.Pointer rather than
// uintptr: they point into ETW's buffers, never into Go memory.
type EventRecord struct {
	EventHeader       EventHeader
	BufferContext     uint32
	ExtendedDataCount uint16
	UserDataLength    uint16
	ExtendedData      unsafe.Pointer
	UserData          unsafe.Pointer
	UserContext       uintptr
}

// EventFilterDescriptor is EVENT_FILTER_DESCRIPTOR.
type EventFilterDescriptor struct {
	Ptr  uint64
	Size uint32
	Type uint32
}

// EnableTraceParameters is ENABLE_TRACE_PARAMETERS (version 2).
type EnableTraceParameters struct {
	Version          uint32
	EnableProperty   uint32
	ControlFlags     uint32
	SourceID         windows.GUID
	EnableFilterDesc *EventFilterDescriptor
	FilterDescCount  uint32
}

// ProcessMemoryCounters is PROCESS_MEMORY_COUNTERS (psapi.h); its sizes are
// SIZE_T, so uintptr fits either build.
type ProcessMemoryCounters struct {
	Size                       uint32
	PageFaultCount             uint32
	PeakWorkingSetSize         uintptr
	WorkingSetSize             uintptr
	QuotaPeakPagedPoolUsage    uintptr
	QuotaPagedPoolUsage        uintptr
	QuotaPeakNonPagedPoolUsage uintptr
	QuotaNonPagedPoolUsage     uintptr
	PagefileUsage              uintptr
	PeakPagefileUsage          uintptr
}
