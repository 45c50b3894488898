package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// lostCheckInterval is how often the kernel's lost-event counters are read
// so that a loss is reported while it happens, not only at the end.
const lostCheckInterval = time.Second

// watch runs the live view until ctx ends or --duration passes.
func watch(ctx context.Context, f *flags, stdout, stderr io.Writer) error {
	src, err := openSource(f.config(stderr))
	if err != nil {
		return err
	}
	defer src.Close()

	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	p := tracer.NewPrinter(stdout, tracer.PrinterOptions{JSON: f.json, Color: colorWanted(stdout), PID: f.pid})
	p.Header()
	// Start from what holds the port now; the probes are attached first so
	// that nothing happens unseen between the snapshot and the trace.
	if f.port != 0 {
		snapshotNs := time.Now().UnixNano()
		report, err := portReport(f.port)
		if err != nil {
			fmt.Fprintf(stderr, "porttrace: no snapshot of port %d's sockets: %v\n", f.port, err)
		} else {
			p.Correlator.Seed(report, snapshotNs)
		}
	}
	if err := tracer.ServeCache(ctx, p); err != nil {
		fmt.Fprintf(stderr, "porttrace: %v (porttrace who will not name TIME_WAIT owners from this watch)\n", err)
	}
	if f.readyFile != "" {
		if err := writeReadyFile(f.readyFile); err != nil {
			return err
		}
	}
	lostDone := reportLost(ctx, src, stderr)
	start := time.Now()
	runErr := src.Run(ctx, p)
	closeErr := p.Close()
	<-lostDone
	tracer.WriteSummary(stderr, p.Correlator.Stats(), src.Lost(), time.Since(start))
	if runErr != nil {
		return runErr
	}
	return closeErr
}

// reportLost warns on stderr whenever the kernel's count of lost events
// grows. The returned channel closes when it has stopped.
func reportLost(ctx context.Context, src tracer.Source, stderr io.Writer) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(lostCheckInterval)
		defer t.Stop()
		var reported uint64
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if lost := src.Lost(); lost.Total() > reported {
					fmt.Fprintf(stderr, "porttrace: %s\n", tracer.DescribeLost(lost))
					reported = lost.Total()
				}
			}
		}
	}()
	return done
}

// writeReadyFile creates the file atomically, so that whoever waits for it
// never reads it half written.
func writeReadyFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".porttrace-ready-*")
	if err != nil {
		return fmt.Errorf("writing ready file: %w", err)
	}
	_, err = tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing ready file: %w", err)
	}
	return nil
}

// colorWanted: colours only on a terminal, and never when NO_COLOR is set.
func colorWanted(w io.Writer) bool {
	file, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := file.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
