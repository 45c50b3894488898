package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/daemon"
)

// platformCommands are the commands only Linux has.
func platformCommands() []*command { return []*command{daemonCommand()} }

// daemonBufferMiB is the daemon's default ring buffer: half a watch's. Its
// reader drains the ring every 10 ms, a loopback storm of every port (14,000
// connections a second) fills under 300 KiB of it meanwhile, and 8 MiB
// still holds a quarter of a second of that storm should the reader stall.
// The ring is mapped twice (once more for reads that wrap around), so it
// counts twice in the resident memory a DaemonSet's limits see, with the
// 2 MiB ring in front of it: 20 MiB where a watch's counts 36.
const daemonBufferMiB = 8

func daemonCommand() *command {
	fs := newFlagSet("porttrace daemon")
	var cfg daemon.Config
	var logFile, probe string
	var bufferMiB int
	var verbose bool
	fs.StringVar(&cfg.Socket, "socket", api.DaemonSocket, "serve the API on this unix socket")
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/porttrace", `keep the port history here ("" keeps none)`)
	fs.DurationVar(&cfg.HistoryMaxAge, "history-max-age", 30*24*time.Hour, "forget history older than this")
	fs.Int64Var(&cfg.HistoryMaxBytes, "history-max-bytes", 64<<20, "keep the history database under this many bytes")
	fs.StringVar(&cfg.MetricsAddress, "metrics-address", "", "serve Prometheus metrics on http://ADDRESS/metrics (e.g. 127.0.0.1:9813); default: off")
	fs.StringVar(&logFile, "log-file", "", "log here instead of standard error; SIGHUP reopens it (for logrotate)")
	fs.StringVar(&probe, "probe", "auto", "hook family: auto, tracepoint or kprobe")
	fs.IntVar(&bufferMiB, "buffer-size", daemonBufferMiB, "kernel ring buffer size in MiB (a power of two)")
	fs.BoolVarP(&verbose, "verbose", "v", false, "log which hooks were attached and why")
	return &command{
		traces: true,
		doc: &clidoc.Command{
			Name:    "daemon",
			Summary: "trace every port as a service: who from its cache, history, metrics",
			Description: `Trace every port continuously and keep the owner of every socket, TIME_WAIT
owners included: seeded by one snapshot at start, kept current by events, and
reconciled with a fresh snapshot whenever the kernel reports lost events.
porttrace who, why and history ask it first (on --socket, or PORTTRACE_SOCKET).
The API answers root and the group porttrace only. SIGTERM or SIGINT stop it
within a second; SIGHUP reopens --log-file.`,
			Flags: fs,
		},
		run: func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
			var err error
			if cfg.Source.Probe, err = tracer.ParseProbeMode(probe); err != nil {
				return usageError("%v", err)
			}
			if bufferMiB < 1 || bufferMiB > 1024 || bufferMiB&(bufferMiB-1) != 0 {
				return usageError("invalid --buffer-size %d: want a power of two from 1 to 1024 (MiB)", bufferMiB)
			}
			if cfg.HistoryMaxAge <= 0 || cfg.HistoryMaxBytes <= 0 {
				return usageError("--history-max-age and --history-max-bytes must be positive")
			}
			cfg.Source.BufferSize = bufferMiB << 20
			// Returns only if it did not re-execute the daemon.
			joinErr := daemon.EnterHostCgroupNamespace()
			log, err := openLog(logFile, stderr)
			if err != nil {
				return err
			}
			defer log.close()
			if joinErr != nil {
				log.printf("%v: other containers' processes may be shown without their container and pod", joinErr)
			}
			cfg.Logf = log.printf
			cfg.Source.Warnf = log.printf
			if verbose {
				cfg.Source.Logf = log.printf
			}
			reopen := make(chan os.Signal, 1)
			signal.Notify(reopen, syscall.SIGHUP)
			defer signal.Stop(reopen)
			go func() {
				for range reopen {
					if err := log.reopen(); err != nil {
						log.printf("reopening the log: %v", err)
						continue
					}
					log.printf("reopened the log (SIGHUP)")
				}
			}()
			return daemon.Run(ctx, cfg)
		},
	}
}

// daemonLog writes the daemon's log lines, to a file SIGHUP reopens or to
// standard error.
type daemonLog struct {
	mu   sync.Mutex
	path string
	w    io.Writer
	f    *os.File
}

func openLog(path string, stderr io.Writer) (*daemonLog, error) {
	l := &daemonLog{path: path, w: stderr}
	if path != "" {
		if err := l.reopen(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *daemonLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s porttrace: "+format+"\n", append([]any{time.Now().Format(time.RFC3339)}, args...)...)
}

// reopen opens the log file again: logrotate has moved the old one.
func (l *daemonLog) reopen() error {
	if l.path == "" {
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("opening the log %s: %w", l.path, err)
	}
	l.mu.Lock()
	old := l.f
	l.f, l.w = f, f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *daemonLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
	}
}
