package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/why"
)

const (
	freeAbout = `Stop the topmost processes holding PORT (SIGTERM, then SIGKILL after --timeout),
with --tree their descendants too, and wait until the port can be bound. It acts
on a snapshot taken now, through pidfds: a pid reused meanwhile is never signalled.`
	timeoutUsage  = "how long a process has to exit after SIGTERM before SIGKILL"
	timeWaitUsage = "also destroy the port's TIME_WAIT sockets (SOCK_DESTROY, as ss -K)"
)

// serverBind is a Linux server's bind: with SO_REUSEADDR, which passes
// TIME_WAIT sockets.
var serverBind = why.Request{ReuseAddr: true}

func trialBind(req why.Request) (string, error) { return linux.TrialBind(req) }

// identify is the process pid names now, for telling a process from a
// later one that took its pid.
func identify(pid uint32) (proc.Identity, error) { return proc.Identify(pid) }

func descendants(root proc.Identity) ([]proc.Identity, error) { return proc.Descendants(root) }

func stopProcess(ctx context.Context, id proc.Identity, timeout time.Duration) (string, error) {
	outcome, err := proc.Stop(ctx, id, timeout)
	return outcome.String(), err
}

func destroyTimeWait(w io.Writer, port uint16) {
	res, err := linux.DestroyTimeWait(port)
	switch {
	case err != nil:
		fmt.Fprintf(w, "TIME_WAIT sockets left: %v\n", err)
	case res.Remaining > 0:
		fmt.Fprintf(w, "TIME_WAIT sockets: %d of %d left: this kernel declines to destroy them (Linux 6.0 or later can)\n", res.Remaining, res.Found)
	case res.Found > 0:
		fmt.Fprintf(w, "TIME_WAIT sockets: %d destroyed\n", res.Found)
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
