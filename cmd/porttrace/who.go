package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// who answers "who owns this port?" once and exits: status 0 when a process
// holds the port, 1 when none does, so scripts can test it.
func who(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("porttrace who", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: porttrace who PORT [--json]\n\nEvery process that holds PORT (1-65535 or a service name), with what it holds;\nexit status 1 if no process holds it.\n\nFlags:\n%s", fs.FlagUsages())
	}
	asJSON := fs.Bool("json", false, "print one JSON object (fields in the README)")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return err
		}
		return usageError("%v", err)
	}
	if fs.NArg() != 1 {
		return usageError("who takes one port, e.g. porttrace who 8080")
	}
	port, err := parsePort(fs.Arg(0))
	if err != nil {
		return err
	}
	report, err := snapshotPort(port)
	if err != nil {
		return err
	}
	nameSeen(ctx, report)
	if *asJSON {
		err = render.WhoJSON(stdout, report)
	} else {
		render.WhoText(stdout, report, render.WhoOptions{Now: time.Now()})
	}
	if err != nil {
		return err
	}
	if !report.Held() {
		return exitError{code: 1}
	}
	return nil
}

// askTimeout bounds how long who waits for running porttraces to name the
// owners of sockets no process holds: a stopped or stalled one costs no
// more.
const askTimeout = 300 * time.Millisecond

// nameSeen asks every running porttrace, at once, who owned the report's
// sockets that no process holds any more.
func nameSeen(ctx context.Context, report *snapshot.PortReport) {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	report.NameSeen(api.Seen(api.AskAll(ctx, report.Port)))
}
