package windows

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/windows/internal/winapi"
)

// These tests call the real APIs. Under wine (see .ci/wine-test) the socket
// tables and process queries work, but ETW sessions cannot be consumed and
// listener rows carry no pid, so they assert only what holds on both.

func TestABILayout(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Skip("layouts are checked for 64-bit Windows only")
	}
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof WNODE_HEADER", unsafe.Sizeof(winapi.WnodeHeader{}), 48},
		{"sizeof EVENT_TRACE_PROPERTIES", unsafe.Sizeof(winapi.EventTraceProperties{}), 120},
		{"offsetof EVENT_TRACE_PROPERTIES.LoggerNameOffset", unsafe.Offsetof(winapi.EventTraceProperties{}.LoggerNameOffset), 116},
		{"sizeof EVENT_TRACE_LOGFILEW", unsafe.Sizeof(winapi.EventTraceLogfile{}), 448},
		{"offsetof EVENT_TRACE_LOGFILEW.LogfileHeader", unsafe.Offsetof(winapi.EventTraceLogfile{}.LogfileHeader), 120},
		{"offsetof EVENT_TRACE_LOGFILEW.EventRecordCallback", unsafe.Offsetof(winapi.EventTraceLogfile{}.EventRecordCallback), 424},
		{"offsetof EVENT_TRACE_LOGFILEW.Context", unsafe.Offsetof(winapi.EventTraceLogfile{}.Context), 440},
		{"sizeof EVENT_HEADER", unsafe.Sizeof(winapi.EventHeader{}), 80},
		{"offsetof EVENT_HEADER.EventDescriptor", unsafe.Offsetof(winapi.EventHeader{}.EventDescriptor), 40},
		{"sizeof EVENT_RECORD", unsafe.Sizeof(winapi.EventRecord{}), 112},
		{"offsetof EVENT_RECORD.UserDataLength", unsafe.Offsetof(winapi.EventRecord{}.UserDataLength), 86},
		{"offsetof EVENT_RECORD.UserContext", unsafe.Offsetof(winapi.EventRecord{}.UserContext), 104},
		{"sizeof ENABLE_TRACE_PARAMETERS", unsafe.Sizeof(winapi.EnableTraceParameters{}), 48},
		{"offsetof ENABLE_TRACE_PARAMETERS.EnableFilterDesc", unsafe.Offsetof(winapi.EnableTraceParameters{}.EnableFilterDesc), 32},
		{"sizeof EVENT_FILTER_DESCRIPTOR", unsafe.Sizeof(winapi.EventFilterDescriptor{}), 16},
		{"offsetof EVENT_FILTER_EVENT_ID.Events", unsafe.Offsetof(eventIDFilter{}.ids), 4},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestCheckAdmin(t *testing.T) {
	err := CheckAdmin()
	if err != nil && (!errors.Is(err, ErrNotElevated) || strings.Contains(err.Error(), "\n")) {
		t.Fatalf("CheckAdmin() = %q", err)
	}
	t.Logf("CheckAdmin() = %v", err)
}

// TestSessionRunsOrFailsCleanly opens a session of its own. Under wine or
// without elevation that fails and the error must say where; elevated on
// Windows the session must run and stop on cancel.
func TestSessionRunsOrFailsCleanly(t *testing.T) {
	name := fmt.Sprintf("porttrace-test-%d", os.Getpid())
	src, err := open(tracer.Config{Logf: t.Logf}, name)
	if err != nil {
		var errno syscall.Errno
		if !strings.Contains(err.Error(), fmt.Sprintf("etw session %q", name)) || !errors.As(err, &errno) {
			t.Fatalf("unclear error: %v", err)
		}
		t.Logf("open: %v", err)
		return
	}
	defer src.Close()
	if len(src.Hooks()) != 1 {
		t.Errorf("hooks: %q", src.Hooks())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var h countingHandler
	if err := src.Run(ctx, &h); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events, %d ticks, %d lost", h.events, h.ticks, src.Lost())
	if h.ticks == 0 {
		t.Error("no ticks in a second")
	}
}

// underWine reports whether the test runs under wine, whose ETW functions
// are stubs: ntdll exports wine_get_version there and nowhere else.
func underWine() bool {
	return xwin.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// TestStartSessionReplacesStaleSession needs real ETW: it skips under wine
// only, and fails on a Windows host without elevation.
func TestStartSessionReplacesStaleSession(t *testing.T) {
	if underWine() {
		t.Skip("wine's ETW functions are stubs: this runs on a Windows host")
	}
	name := fmt.Sprintf("porttrace-stale-%d", os.Getpid())
	stale, err := startSession(name, 0)
	if err != nil {
		t.Fatalf("starting an etw session (run the tests elevated): %v", err)
	}
	defer stale.stop()
	duplicate := &session{name: name, name16: stale.name16}
	if err := duplicate.start(); !errors.Is(err, xwin.ERROR_ALREADY_EXISTS) {
		duplicate.stop()
		t.Fatalf("StartTrace of a running session's name returned %v, not ERROR_ALREADY_EXISTS", err)
	}
	fresh, err := startSession(name, 0)
	if err != nil {
		t.Fatalf("start over a stale session: %v", err)
	}
	if err := fresh.stop(); err != nil {
		t.Error(err)
	}
}

func TestBuffersFor(t *testing.T) {
	for _, c := range []struct {
		bytes int
		want  uint32
	}{{0, 0}, {-1, 0}, {1, 1}, {64 << 10, 1}, {64<<10 + 1, 2}, {16 << 20, 256}, {1 << 40, 1 << 16}} {
		if got := buffersFor(c.bytes); got != c.want {
			t.Errorf("buffersFor(%d) = %d, want %d", c.bytes, got, c.want)
		}
	}
}

type countingHandler struct{ events, ticks int }

func (h *countingHandler) Handle(*tracer.Event) { h.events++ }
func (h *countingHandler) Tick(int64) int64     { h.ticks++; return tracer.NoDeadline }
