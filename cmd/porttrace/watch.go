package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/api"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/filter"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

const (
	// lostCheckInterval is how often the kernel's lost-event counters and
	// the printer's dropped lines are read, so that a loss is reported
	// while it happens, not only at the end.
	lostCheckInterval = time.Second
	// outputTimeout is how long a stopping watch waits for a slow reader
	// to take the lines still queued: Ctrl-C ends porttrace within a
	// second even when nobody reads its output.
	outputTimeout = 500 * time.Millisecond
)

// watch runs the live view until ctx ends, --duration passes or the output
// fails.
func watch(ctx context.Context, f *watchFlags, stdout, stderr io.Writer) error {
	// SIGPIPE stops a watch as SIGINT does. Asking for it also keeps the Go
	// runtime from killing porttrace, without a summary or cleanup, when
	// its standard output is a pipe whose reader has gone: the write fails
	// with EPIPE instead, and that ends the watch quietly.
	ctx, stopSignal := signal.NotifyContext(ctx, syscall.SIGPIPE)
	defer stopSignal()
	ready, err := newReadyFile(f.readyFile)
	if err != nil {
		return err
	}
	defer ready.discard()
	cfg := f.config(stderr)
	src, err := openSource(cfg)
	if err != nil {
		return err
	}
	defer src.Close()
	fmt.Fprintf(stderr, "porttrace: watching %s\n", f.watching())

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	labels, err := lineLabels()
	if err != nil {
		return err
	}
	startNs := time.Now().UnixNano()
	text := render.Text{Color: colorWanted(stdout), Time: f.time, StartNs: startNs, Connections: f.connections, Labels: labels}
	printer := render.NewPrinter(stdout, render.PrinterOptions{JSON: f.json, Text: text})
	// Output that cannot be written ends the watch at once.
	go func() {
		select {
		case <-printer.Failed():
			stop()
		case <-ctx.Done():
		}
	}()
	printer.Header()
	// Lines are put in time order, go through the filters, are counted and
	// printed; with --connections, lines of sockets make lines of
	// connections first. The filters' tests of owners meet each owner
	// before the window, while it still runs.
	tally := correlate.NewTally(printer)
	shown := filter.New(tally, f.filter)
	var ordered tracer.Sink = shown
	var conns *correlate.Connections
	if f.connections {
		conns = correlate.NewConnections(shown)
		ordered = conns
	}
	window := correlate.NewWindow(ordered)
	var first tracer.Sink = window
	if learner := shown.Learner(window); learner != nil {
		first = learner
	}
	loop := correlate.NewLoop(first)
	window.Follow(loop)
	// Its index is read by porttrace who alone, seldom: it is built when
	// asked for, not as a storm changes it.
	loop.PublishOnDemand()
	seed(loop, f.ports, cfg.Family, f.connections, stderr)
	stopServing, readyErr := serve(loop, ready, stop, stderr)
	defer stopServing()
	lostDone := reportLost(ctx, src, printer, stderr)
	start := time.Now()
	traceCtx, stopTracing := forDuration(ctx, f.duration)
	defer stopTracing()
	runErr := loop.Run(traceCtx, src)
	if err := readyErr(); err != nil && runErr == nil {
		runErr = err
	}
	window.Flush()
	end := time.Now()
	summary := render.Summary{EndNs: end.UnixNano(), Elapsed: end.Sub(start), Stats: loop.Index().Stats,
		Hidden: shown.Hidden(), Late: window.Late(), Lost: src.Lost()}
	if conns != nil {
		conns.Flush(end.UnixNano())
		summary.Unfollowed = conns.Unfollowed()
	}
	summary.Shown = tally.Counts()
	if f.json {
		// The same summary ends the JSON, for whoever reads that.
		summary.Dropped = printer.Dropped()
		printer.Line(render.AppendSummaryJSON(nil, &summary))
	}
	closeErr := printer.Close(outputTimeout)
	stop()
	<-lostDone
	if closeErr != nil {
		if readerGone(closeErr) {
			return nil // porttrace | head: the reader has what it wanted
		}
		return fmt.Errorf("writing output: %w", closeErr)
	}
	summary.Dropped = printer.Dropped()
	render.WriteSummary(stderr, &summary)
	return runErr
}

// seed starts the watch from what holds its ports now; the probes are
// attached first, so that nothing happens unseen between the snapshot and
// the trace. With connections, the watch makes lines of connections.
//
// One port's sockets are looked up alone. Several ports' come from one
// snapshot of every socket, cut to them: it walks every process's sockets
// once, where a snapshot of each port walks them all again (six ports took
// 190 ms here, one snapshot of every socket 35 ms), and all of them are
// seen at one moment, their roles told by every listener.
func seed(loop *correlate.Loop, ports tracer.Ports, family tracer.Family, connections bool, stderr io.Writer) {
	if len(ports) == 1 {
		report, takenNs, err := familySnapshot(ports[0], family)
		if err != nil {
			fmt.Fprintf(stderr, "porttrace: no snapshot of port %d's sockets: %v\n", ports[0], err)
			return
		}
		loop.Seed(report, takenNs)
		return
	}
	report, takenNs, err := familySnapshot(0, family)
	if err != nil {
		fmt.Fprintf(stderr, "porttrace: no snapshot of the sockets open before the watch (their owners are learnt as they act): %v\n", err)
		return
	}
	if len(ports) == 0 {
		// Every port: the lines name the owners of the sockets older
		// than the watch, without a line for each socket of the machine.
		loop.Adopt(report, takenNs)
		if connections {
			// Both ends of a local connection are known before either
			// acts (one end's reset can end it before the other's first
			// line): their at-start lines make no line of their own.
			loop.Seed(report.LocalConnections(), takenNs)
		}
		return
	}
	report.KeepPorts(ports)
	loop.Seed(report, takenNs)
}

// familySnapshot is the snapshot of port (0: every port) cut to family,
// and when it was complete: the loop takes it after the events until then
// (Correlator.Seed), and its lines are dated then.
func familySnapshot(port uint16, family tracer.Family) (*snapshot.PortReport, int64, error) {
	report, err := snapshotTraced(port)
	if err != nil {
		return nil, 0, err
	}
	takenNs := time.Now().UnixNano()
	report.KeepFamily(family)
	return report, takenNs, nil
}

// reportLost warns on stderr whenever the kernel's count of lost events or
// the printer's count of dropped lines grows. The returned channel closes
// when it has stopped.
func reportLost(ctx context.Context, src tracer.Source, printer *render.Printer, stderr io.Writer) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(lostCheckInterval)
		defer t.Stop()
		var lostSeen, droppedSeen uint64
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if lost := src.Lost(); lost.Total() > lostSeen {
					fmt.Fprintf(stderr, "porttrace: %s\n", render.DescribeLost(lost))
					lostSeen = lost.Total()
				}
				// Once the output has failed, its lines go nowhere, and
				// the failure is told instead (nothing at all when the
				// reader has gone: porttrace | head). Dropped is read
				// first: the writer records its failure before it counts
				// what the failure drops.
				if dropped := printer.Dropped(); dropped > droppedSeen && printer.Err() == nil {
					fmt.Fprintf(stderr, "porttrace: %s\n", render.DescribeDropped(dropped))
					droppedSeen = dropped
				}
			}
		}
	}()
	return done
}

// serve starts the watch's API, which porttrace who asks for the owners
// of TIME_WAIT sockets, and puts the ready file in place, if asked for,
// once the loop has taken the sockets older than the watch (Loop.Seeded):
// a script that waits for it starts its load on a watch that is done
// starting, whose first lines name what held the port before. Failing to
// put it in place ends the watch (cancel). stop stops the API; readyErr,
// called once the loop has stopped (always: it ends the wait for the loop
// to be seeded), says why the ready file was not put in place.
func serve(loop *correlate.Loop, ready *readyFile, cancel func(), stderr io.Writer) (stop func(), readyErr func() error) {
	stop = func() {}
	if srv, err := api.Listen(api.WatchSocket(os.Getpid()), api.Backend{Index: loop.FreshIndex}); err != nil {
		fmt.Fprintf(stderr, "porttrace: %v (porttrace who will not name TIME_WAIT owners from this watch)\n", err)
	} else {
		stop = func() { srv.Close() }
	}
	if ready == nil {
		return stop, func() error { return nil }
	}
	quit, published := make(chan struct{}), make(chan error, 1)
	go func() {
		select {
		case <-loop.Seeded():
		case <-quit:
		}
		select {
		case <-loop.Seeded():
			// Seeded, even if the watch stops at the same moment: the
			// file says so.
			err := ready.publish()
			if err != nil {
				cancel()
			}
			published <- err
		default:
			ready.discard()
			published <- nil
		}
	}()
	return stop, func() error {
		close(quit)
		return <-published
	}
}

// readyFile is a ready file written but not yet in place: renamed into
// place, so that whoever waits for it never reads it half written.
type readyFile struct{ tmp, path string }

// newReadyFile writes the ready file for path ("": none, nil) beside it,
// before the watch attaches its probes: a path it cannot be written at is
// refused at once, and a file an earlier run left at path, which would
// say ready before this watch is, is removed before a script can take it
// for this watch's.
func newReadyFile(path string) (*readyFile, error) {
	if path == "" {
		return nil, nil
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.IsDir() {
			return nil, fmt.Errorf("writing ready file: %s is a directory", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the ready file an earlier run left: %w", err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".porttrace-ready-*")
	if err != nil {
		return nil, fmt.Errorf("writing ready file: %w", err)
	}
	_, err = tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("writing ready file: %w", err)
	}
	return &readyFile{tmp: tmp.Name(), path: path}, nil
}

func (r *readyFile) publish() error {
	if err := os.Rename(r.tmp, r.path); err != nil {
		r.discard()
		return fmt.Errorf("writing ready file: %w", err)
	}
	return nil
}

// discard removes the file not put in place; once it is, or when none was
// asked for, it does nothing.
func (r *readyFile) discard() {
	if r != nil {
		os.Remove(r.tmp)
	}
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
