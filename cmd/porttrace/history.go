package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/history"
	"github.com/porttrace/porttrace/tracer/render"
)

// historyCommand says who held a port, from when to when, from the
// daemon's history.
func historyCommand() *command {
	fs := newFlagSet("porttrace history")
	var since, until time.Duration
	var asJSON bool
	var socket, dataDir string
	fs.DurationVar(&since, "since", 24*time.Hour, "how far back (e.g. 24h, 15m)")
	fs.DurationVar(&until, "until", 0, "up to this long ago (0: now)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object")
	fs.StringVar(&socket, "socket", "", "ask the daemon on this socket (default: $PORTTRACE_SOCKET, else "+api.DaemonSocket+")")
	fs.StringVar(&dataDir, "data-dir", "/var/lib/porttrace", "read the history here when no daemon answers")
	return &command{
		doc: &clidoc.Command{
			Name:    "history",
			Args:    "PORT",
			Summary: "say who held PORT, from when to when, its failed binds and connection counts",
			Description: `What porttrace daemon recorded of PORT: who held it, from when to when, with
process facts; failed binds and their errno; owner changes; connections
opened and closed per minute. It asks the running daemon, or reads its data
directory when none runs.`,
			Flags: fs,
		},
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 1 {
				return usageError("history takes one port, e.g. porttrace history 8080")
			}
			port, err := tracer.ParsePort(args[0])
			if err != nil {
				return usageError("%v", err)
			}
			if since <= 0 || until < 0 || until >= since {
				return usageError("--since must be positive and longer ago than --until")
			}
			now := time.Now()
			res, err := queryHistory(ctx, daemonSocket(socket), dataDir, port, now.Add(-since), now.Add(-until))
			if err != nil {
				return err
			}
			if asJSON {
				return render.HistoryJSON(stdout, res)
			}
			render.HistoryText(stdout, res, time.Local)
			return nil
		},
		answers: true,
	}
}

// daemonSocket is where the daemon is asked: the flag, else the
// environment, else the default.
func daemonSocket(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("PORTTRACE_SOCKET"); env != "" {
		return env
	}
	return api.DaemonSocket
}

// queryHistory asks the daemon, or reads its data directory when no
// daemon answers.
func queryHistory(ctx context.Context, socket, dataDir string, port uint16, since, until time.Time) (*history.Result, error) {
	actx, cancel := context.WithTimeout(ctx, daemonTimeout)
	defer cancel()
	if res, err := api.History(actx, socket, port, since, until); err == nil {
		return res, nil
	}
	if _, err := os.Stat(dataDir); err != nil {
		return nil, fmt.Errorf("no daemon answers on %s and there is no history in %s: start porttrace daemon", socket, dataDir)
	}
	store, err := history.Open(dataDir, history.Options{})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	res, err := store.Query(port, since, until)
	return &res, err
}
