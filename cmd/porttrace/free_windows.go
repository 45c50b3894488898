package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/why"
	"github.com/porttrace/porttrace/windows"
)

const (
	freeAbout = `End the topmost processes holding PORT with TerminateProcess, with --tree their
descendants too, and wait until the port can be bound. Windows has no SIGTERM:
a process cannot be asked to exit, only ended, without a chance to clean up
(taskkill /F). It acts on a snapshot taken now, through process handles checked
against each process's creation time: a pid reused meanwhile is never ended.`
	timeoutUsage  = "how long to wait for the processes to exit and the port to come free (Windows has no SIGTERM to wait after)"
	timeWaitUsage = "TIME_WAIT connections cannot be destroyed on Windows; a plain bind() passes them"
)

// serverBind is a Windows server's bind: without SO_REUSEADDR, which on
// Windows would bind even over a listener (unless that one set
// SO_EXCLUSIVEADDRUSE); a plain bind passes TIME_WAIT connections.
var serverBind = why.Request{}

func trialBind(req why.Request) (string, error) { return windows.TrialBind(req) }

// identify is the process pid names now, for telling a process from a
// later one that took its pid.
func identify(pid uint32) (proc.Identity, error) { return windows.Identify(pid) }

func descendants(root proc.Identity) ([]proc.Identity, error) { return windows.Descendants(root) }

func stopProcess(ctx context.Context, id proc.Identity, timeout time.Duration) (string, error) {
	outcome, err := windows.Stop(ctx, id, timeout)
	return outcome.String(), err
}

// destroyTimeWait says plainly that Windows cannot: SetTcpEntry's
// MIB_TCP_STATE_DELETE_TCB resets established connections only, and no
// call ends a TIME_WAIT one before its time.
func destroyTimeWait(w io.Writer, port uint16) {
	fmt.Fprintf(w, "TIME_WAIT connections on port %d: Windows has no call that destroys them (SetTcpEntry resets established connections only); they end when TcpTimedWaitDelay runs out, and a plain bind() passes them meanwhile\n", port)
}

func isTerminal(f *os.File) bool {
	var mode uint32
	return xwin.GetConsoleMode(xwin.Handle(f.Fd()), &mode) == nil
}
