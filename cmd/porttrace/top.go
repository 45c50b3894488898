package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
	"github.com/porttrace/porttrace/tracer/render"
	"github.com/porttrace/porttrace/tracer/top"
)

// topFlags are top's options: the watch's that apply, and its own.
type topFlags struct {
	watchFlags
	interval   time.Duration
	iterations int
	sortName   string
	sort       top.SortKey
}

func (f *topFlags) define(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&f.portSpecs, "port", "p", nil, "show only these `PORTS`: 8080, 80,443, 8000-8100 or a service name (http); repeated, the lists are merged; default: every port")
	fs.BoolVarP(&f.ipv4, "ipv4", "4", false, "IPv4 only")
	fs.BoolVarP(&f.ipv6, "ipv6", "6", false, "IPv6 only")
	fs.DurationVarP(&f.interval, "interval", "d", time.Second, "refresh every `DURATION`")
	fs.IntVarP(&f.iterations, "iterations", "n", 0, "stop after `N` tables; default: at q, Ctrl-C or SIGTERM")
	fs.StringVar(&f.sortName, "sort", "port", "sort the rows by `KEY`: "+strings.Join(top.SortNames(), ", "))
	clidoc.Values(fs, "sort", top.SortNames()...)
	fs.DurationVar(&f.duration, "duration", 0, "trace for this `DURATION` (30s, 5m), from when the trace has started; default (or 0): until q, Ctrl-C or SIGTERM")
	f.defineSource(fs)
}

func (f *topFlags) check() error {
	if err := f.watchFlags.check(); err != nil {
		return err
	}
	if f.interval < 100*time.Millisecond {
		return usageError("invalid --interval %v: want 100ms or more", f.interval)
	}
	if f.iterations < 0 {
		return usageError("invalid --iterations %d: must not be negative", f.iterations)
	}
	var err error
	if f.sort, err = top.ParseSortKey(f.sortName); err != nil {
		return usageError("%v", err)
	}
	return nil
}

func topCommand() *command {
	var f topFlags
	fs := newFlagSet("top")
	f.define(fs)
	return &command{
		traces: true,
		doc: &clidoc.Command{
			Name:    "top",
			Summary: "a live table of sockets by port and process",
			Description: `porttrace top shows, per port and process, the sockets by state, the
connections opened and closed per second, the oldest CLOSE_WAIT and
TIME_WAIT, and the binds that failed, refreshed every --interval. A
client's connections count under the port they connect to.

On a terminal the table is redrawn in place: q quits, and the keys
` + top.SortHelp() + ` sort the rows.
Otherwise (a pipe, a file) it prints one plain table per --interval,
after a line with the time, and nothing else: porttrace top -n 1 -d 5s
prints one table of five seconds.`,
			Flags: fs,
		},
		run: func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
			if err := f.check(); err != nil {
				return err
			}
			return runTop(ctx, &f, os.Stdin, stdout, stderr)
		},
	}
}

// runTop watches as a watch does, into top's sink, and shows the table
// until ctx ends, q is pressed, --duration passes or --iterations tables
// were printed.
func runTop(ctx context.Context, f *topFlags, stdin *os.File, stdout, stderr io.Writer) error {
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
	// The probes are attached: the sink counts what they saw from here,
	// and the first table's rates are over the time since.
	started := time.Now()
	ctx, stop := context.WithCancel(ctx)
	defer stop()

	labels, err := lineLabels()
	if err != nil {
		return err
	}
	sink := top.NewSink(f.ports)
	loop := correlate.NewLoop(sink)
	seed(loop, f.ports, cfg.Family, false, stderr)
	stopServing, readyErr := serve(loop, ready, stop, stderr)
	defer stopServing()
	ctx, stopTracing := forDuration(ctx, f.duration)
	defer stopTracing()
	ran := make(chan error, 1)
	go func() { ran <- loop.Run(ctx, src) }()
	// The first table waits for the sockets older than top: before the
	// loop has them, it would show none.
	select {
	case <-loop.Seeded():
	case <-ctx.Done():
	case err := <-ran:
		ran <- err
	}

	screen, err := openScreen(stdin, stdout)
	if err != nil {
		stop()
		<-ran
		readyErr()
		return err
	}
	v := &topView{flags: f, loop: loop, sink: sink, src: src, sort: f.sort, labels: labels, startNs: started.UnixNano(), last: started}
	if screen == nil {
		err = v.plain(ctx, stdout)
	} else {
		err = v.interactive(ctx, screen)
		screen.restore()
	}
	stop()
	runErr := <-ran
	if err := readyErr(); runErr == nil {
		runErr = err
	}
	if runErr != nil {
		return runErr
	}
	return err
}

// topView makes the tables: it keeps the counts of the last one, from
// which the next one's rates are taken.
type topView struct {
	flags *topFlags
	loop  *correlate.Loop
	sink  *top.Sink
	src   tracer.Source
	sort  top.SortKey
	// labels names the network namespaces of rows in another.
	labels  *render.Labels
	startNs int64
	prev    *top.Snapshot
	last    time.Time
}

// next builds the table of now.
func (v *topView) next() *top.Table {
	now := time.Now()
	counts := v.sink.Snapshot()
	t := top.Build(v.loop.Index(), counts, v.prev, v.flags.ports, now.UnixNano(), v.startNs, now.Sub(v.last))
	t.Sort(v.sort)
	v.prev, v.last = counts, now
	return t
}

// title is the line above the table: the time, what is watched, the
// sockets shown and the events lost.
func (v *topView) title(t *top.Table) string {
	return fmt.Sprintf("porttrace top %s: %s; %d sockets in %d rows; %s",
		time.Unix(0, t.AtNs).Format("15:04:05"), v.flags.watching(), t.Sockets, len(t.Rows), render.DescribeLost(v.src.Lost()))
}

// plain prints a table every interval, for a pipe or a file.
func (v *topView) plain(ctx context.Context, w io.Writer) error {
	tick := time.NewTicker(v.flags.interval)
	defer tick.Stop()
	for n := 0; v.flags.iterations == 0 || n < v.flags.iterations; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		t := v.next()
		if n > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, v.title(t))
		if err := t.WriteRows(w, -1, v.labels.NetNS); err != nil {
			if readerGone(err) {
				return nil
			}
			return fmt.Errorf("writing output: %w", err)
		}
	}
	return nil
}

// interactive redraws the table in place every interval, at once after a
// key that changes the sort or a resize, until q. A redraw is no new
// table: --iterations counts those.
func (v *topView) interactive(ctx context.Context, s *screen) error {
	tick := time.NewTicker(v.flags.interval)
	defer tick.Stop()
	var frame bytes.Buffer
	t := v.next()
	for n := 1; ; {
		frame.Reset()
		frame.WriteString(clearScreen)
		fmt.Fprintf(&frame, "%s\r\nsort: %s (%s, q quit)\r\n\r\n", v.title(t), v.sort, top.SortHelp())
		rows, cols := s.size()
		var table bytes.Buffer
		if err := t.WriteRows(&table, max(rows-5, 1), v.labels.NetNS); err != nil {
			return err
		}
		for _, line := range strings.SplitAfter(strings.TrimSuffix(table.String(), "\n"), "\n") {
			line = strings.TrimSuffix(line, "\n")
			if len(line) > cols {
				line = line[:cols]
			}
			frame.WriteString(line + "\r\n")
		}
		if _, err := s.out.Write(frame.Bytes()); err != nil {
			return fmt.Errorf("writing to the terminal: %w", err)
		}
		if v.flags.iterations > 0 && n >= v.flags.iterations {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			t = v.next()
			n++
		case <-s.resized:
		case key := <-s.keys:
			if key == 'q' || key == 'Q' {
				return nil
			}
			if k, ok := top.SortKeyOf(key); ok {
				v.sort = k
				t.Sort(k)
			}
		}
	}
}

// clearScreen moves the cursor home and clears the screen.
const clearScreen = "\x1b[H\x1b[2J"

// screen is a terminal in top's mode: keys arrive one at a time, without
// echo, on keys; resized says the window changed size, which size tells;
// restore gives the terminal back as it was.
type screen struct {
	out     io.Writer
	keys    <-chan byte
	resized <-chan os.Signal
	size    func() (rows, cols int)
	restore func()
}
