package winapi

//sys	StartTrace(handle *TraceHandle, name *uint16, props *EventTraceProperties) (ret error) = advapi32.StartTraceW
//sys	ControlTrace(handle TraceHandle, name *uint16, props *EventTraceProperties, control uint32) (ret error) = advapi32.ControlTraceW
//sys	EnableTraceEx2(handle TraceHandle, provider *windows.GUID, control uint32, level uint8, matchAnyKeyword uint64, matchAllKeyword uint64, timeoutMs uint32, params *EnableTraceParameters) (ret error) = advapi32.EnableTraceEx2
//sys	OpenTrace(logfile *EventTraceLogfile) (handle TraceHandle, err error) [failretval==InvalidProcessTraceHandle] = advapi32.OpenTraceW
//sys	ProcessTrace(handles *TraceHandle, count uint32, start *windows.Filetime, end *windows.Filetime) (ret error) = advapi32.ProcessTrace
//sys	CloseTrace(handle TraceHandle) (ret error) = advapi32.CloseTrace
//sys	GetExtendedTcpTable(table *byte, size *uint32, order bool, family uint32, class uint32, reserved uint32) (ret error) = iphlpapi.GetExtendedTcpTable
//sys	GetExtendedUdpTable(table *byte, size *uint32, order bool, family uint32, class uint32, reserved uint32) (ret error) = iphlpapi.GetExtendedUdpTable
//sys	GetProcessMemoryInfo(process windows.Handle, counters *ProcessMemoryCounters, size uint32) (err error) = kernel32.K32GetProcessMemoryInfo
