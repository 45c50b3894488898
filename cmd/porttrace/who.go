package main

import (
	"context"
	"io"
	"time"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// whoCommand answers "who owns this port?" once and exits: status 0 when a
// process holds the port, 1 when none does, so scripts can test it.
func whoCommand() *command {
	fs := newFlagSet("porttrace who")
	asJSON := fs.Bool("json", false, "print one JSON object (fields in the README)")
	return &command{
		doc: &clidoc.Command{
			Name:    "who",
			Args:    "PORT",
			Summary: "say once which processes hold PORT, and who owned its TIME_WAIT sockets",
			Description: `Every process that holds PORT (1-65535 or a service name), with what it
holds; exit status 1 if no process holds it.`,
			Flags: fs,
		},
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 1 {
				return usageError("who takes one port, e.g. porttrace who 8080")
			}
			port, err := tracer.ParsePort(args[0])
			if err != nil {
				return usageError("%v", err)
			}
			return who(ctx, port, *asJSON, stdout)
		},
	}
}

func who(ctx context.Context, port uint16, asJSON bool, stdout io.Writer) error {
	report, err := snapshotPort(port)
	if err != nil {
		return err
	}
	nameSeen(ctx, report)
	if asJSON {
		err = render.WhoJSON(stdout, report)
	} else {
		render.WhoText(stdout, report)
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
