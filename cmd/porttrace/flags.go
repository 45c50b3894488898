package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/filter"
	"github.com/porttrace/porttrace/tracer/render"
)

// watchFlags are the watch's options: as typed, and as check makes them.
type watchFlags struct {
	portSpecs     []string
	probeName     string
	bufferMiB     int
	stateSpecs    []string
	eventSpecs    []string
	commSpecs     []string
	containerSpec string
	timeName      string

	ports       tracer.Ports
	portNames   []tracer.PortName
	pid         uint32
	pidComm     string
	filter      filter.Options
	containerID string
	connections bool
	time        render.TimeFormat
	ipv4        bool
	ipv6        bool
	json        bool
	duration    time.Duration
	readyFile   string
	probe       tracer.ProbeMode
	verbose     bool
	version     bool
	// bufferSize is in bytes.
	bufferSize int
}

// define defines the watch's flags on fs.
func (f *watchFlags) define(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&f.portSpecs, "port", "p", nil, "watch only these `PORTS`, at either end of a socket: 8080, 80,443, 8000-8100 or a service name (http); repeated, the lists are merged; default: every port")
	fs.Var(pidFlag{&f.pid}, "pid", "show only the sockets this `PID` and its descendants own, children forked during the watch included")
	fs.StringArrayVar(&f.stateSpecs, "state", nil, "show only transitions into or out of these `STATES`: TIME_WAIT, or CLOSE_WAIT,LAST_ACK (ss's time-wait too); with --connections, connections that passed through one; repeated, the lists are merged")
	clidoc.Values(fs, "state", filter.StateNames()...)
	fs.StringArrayVar(&f.eventSpecs, "event", nil, "show only these `KINDS` of line: "+strings.Join(filter.TypeNames, ", ")+" (JSON's type), comma-separated; repeated, the lists are merged")
	clidoc.Values(fs, "event", filter.TypeNames...)
	fs.BoolVar(&f.filter.Failed, "failed", false, "show only failures: binds that failed, connects refused, timed out or given up, resets, with their errno")
	fs.StringArrayVar(&f.commSpecs, "comm", nil, "show only the sockets of processes with one of these command `NAMES`, comma-separated; repeated, the lists are merged")
	fs.StringVar(&f.containerSpec, "container", "", "show only the sockets of processes in this container: `ID|NAME`, its id (12 hex digits or more, as docker ps shows) or a name Docker or Podman knows")
	fs.BoolVar(&f.connections, "connections", false, "print one line per connection when it ends (both ends and their owners, lifetime, handshake, the end that closed first, the time in each state) instead of its transitions")
	fs.StringVar(&f.timeName, "time", render.TimeClock.String(), "write the time of text lines in `FORMAT`: clock (15:04:05.000000), date (the date too) or relative (seconds since the watch started)")
	clidoc.Values(fs, "time", render.TimeFormatNames()...)
	fs.BoolVarP(&f.ipv4, "ipv4", "4", false, "IPv4 only")
	fs.BoolVarP(&f.ipv6, "ipv6", "6", false, "IPv6 only")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per line (fields in the README)")
	fs.DurationVar(&f.duration, "duration", 0, "trace for this `DURATION` (30s, 5m), from when the trace has started; default (or 0): until Ctrl-C or SIGTERM")
	f.defineSource(fs)
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
}

// defineSource defines the flags of the kernel source, which the watch
// and top share.
func (f *watchFlags) defineSource(fs *pflag.FlagSet) {
	fs.StringVar(&f.readyFile, "ready-file", "", "write this `FILE` (porttrace's pid) once every probe is attached and the sockets already open are known")
	clidoc.File(fs, "ready-file")
	fs.StringVar(&f.probeName, "probe", "auto", "hook `FAMILY`: auto, tracepoint or kprobe")
	clidoc.Values(fs, "probe", "auto", "tracepoint", "kprobe")
	fs.IntVar(&f.bufferMiB, "buffer-size", tracer.DefaultBufferSize>>20, "kernel ring buffer size in `MiB`, a power of two")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "say which hooks were attached and why")
}

// forDuration ends ctx, the one a watch or top traces in, after duration
// where one is given. It is called as the tracing begins, once the probes
// are attached and the sockets found: a start that a loaded machine slows
// down to seconds does not eat into the time asked for.
func forDuration(ctx context.Context, duration time.Duration) (context.Context, context.CancelFunc) {
	if duration > 0 {
		return context.WithTimeout(ctx, duration)
	}
	return ctx, func() {}
}

// watchCommand is porttrace without a command: the live watch.
func watchCommand() *command {
	var f watchFlags
	fs := newFlagSet("porttrace")
	f.define(fs)
	return &command{
		traces: true,
		doc: &clidoc.Command{
			Summary: "watch TCP state transitions and binds live",
			Flags:   fs,
		},
		run: func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
			if f.version {
				return printVersion(ctx, nil, stdout, stderr)
			}
			if err := f.checkWatch(); err != nil {
				return err
			}
			return watch(ctx, &f, stdout, stderr)
		},
	}
}

// pidFlag is --pid: a process id, never 0, which no process has (and which
// the watch's options read as no --pid at all).
type pidFlag struct{ pid *uint32 }

func (p pidFlag) String() string {
	if p.pid == nil || *p.pid == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(*p.pid), 10)
}

func (p pidFlag) Type() string { return "uint32" }

func (p pidFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	switch {
	case err != nil:
		return fmt.Errorf("want a process id, a number from 1")
	case n == 0:
		return fmt.Errorf("pid 0 is no process")
	}
	*p.pid = uint32(n)
	return nil
}

// check validates the flags as typed and makes the options of them.
func (f *watchFlags) check() error {
	var err error
	if f.portSpecs != nil {
		if f.ports, f.portNames, err = tracer.ParsePorts(f.portSpecs...); err != nil {
			return usageError("%v", err)
		}
	}
	if f.probe, err = tracer.ParseProbeMode(f.probeName); err != nil {
		return usageError("%v", err)
	}
	if f.ipv4 && f.ipv6 {
		return usageError("-4 and -6 exclude each other: give neither to see both")
	}
	if f.duration < 0 {
		return usageError("invalid --duration %v: must not be negative", f.duration)
	}
	if f.bufferMiB < 1 || f.bufferMiB > 1024 || f.bufferMiB&(f.bufferMiB-1) != 0 {
		return usageError("invalid --buffer-size %d: want a power of two from 1 to 1024 (MiB)", f.bufferMiB)
	}
	f.bufferSize = f.bufferMiB << 20
	if f.pid != 0 {
		if f.pidComm, err = processName(f.pid); err != nil {
			return usageError("invalid --pid %d: %v", f.pid, err)
		}
		root, err := identify(f.pid)
		if err != nil {
			return usageError("invalid --pid %d: %v", f.pid, err)
		}
		f.filter.Tree = filter.NewTree(root, identify, parentOf)
	}
	return nil
}

// checkWatch validates the flags of the watch itself, which top has not:
// check's, then the filters and the shape of the lines.
func (f *watchFlags) checkWatch() error {
	err := f.check()
	if err != nil {
		return err
	}
	for _, spec := range f.stateSpecs {
		states, err := filter.ParseStates(spec)
		if err != nil {
			return usageError("%v", err)
		}
		f.filter.States = append(f.filter.States, states...)
	}
	if f.eventSpecs != nil && f.connections {
		return usageError("--event chooses among the lines of transitions, which --connections replaces with one line per connection: give one of them")
	}
	for _, spec := range f.eventSpecs {
		types, err := filter.ParseTypes(spec)
		if err != nil {
			return usageError("%v", err)
		}
		f.filter.Types = append(f.filter.Types, types...)
	}
	for _, spec := range f.commSpecs {
		for _, name := range strings.Split(spec, ",") {
			if name = strings.TrimSpace(name); name == "" {
				return usageError("invalid --comm %q: an empty name", spec)
			}
			f.filter.Comms = append(f.filter.Comms, name)
		}
	}
	if f.containerSpec != "" {
		if f.filter.Container, f.containerID, err = containerTest(f.containerSpec); err != nil {
			return err
		}
	}
	if f.time, err = render.ParseTimeFormat(f.timeName); err != nil {
		return usageError("%v", err)
	}
	return nil
}

func (f *watchFlags) config(stderr io.Writer) tracer.Config {
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "porttrace: "+format+"\n", args...)
	}
	cfg := tracer.Config{Ports: f.ports, Probe: f.probe, BufferSize: f.bufferSize, Warnf: logf}
	switch {
	case f.ipv4:
		cfg.Family = tracer.FamilyIPv4
	case f.ipv6:
		cfg.Family = tracer.FamilyIPv6
	}
	if f.verbose {
		cfg.Logf = logf
	}
	return cfg
}

// watching says what the watch watches, in the words the flags were given
// in: "port 80 (http), IPv4 and IPv6".
func (f *watchFlags) watching() string {
	var b strings.Builder
	switch len(f.ports) {
	case 0:
		b.WriteString("every port")
	case 1:
		b.WriteString("port " + f.ports.String())
	default:
		b.WriteString("ports " + f.ports.String())
	}
	if len(f.portNames) > 0 {
		var names []string
		for _, n := range f.portNames {
			if len(f.ports) == 1 {
				names = append(names, n.Name)
			} else {
				names = append(names, n.Name+" "+strconv.Itoa(int(n.Port)))
			}
		}
		b.WriteString(" (" + strings.Join(names, ", ") + ")")
	}
	switch {
	case f.ipv4:
		b.WriteString(", IPv4 only")
	case f.ipv6:
		b.WriteString(", IPv6 only")
	default:
		b.WriteString(", IPv4 and IPv6")
	}
	if f.pid != 0 {
		fmt.Fprintf(&b, ", sockets of process %d (%s) and its descendants", f.pid, f.pidComm)
	}
	if len(f.filter.Comms) > 0 {
		b.WriteString(", sockets of processes named " + strings.Join(f.filter.Comms, " or "))
	}
	if f.containerID != "" {
		fmt.Fprintf(&b, ", sockets in container %s", f.containerID[:min(12, len(f.containerID))])
	}
	if len(f.filter.States) > 0 {
		b.WriteString(", only " + joinNames(f.filter.States, " or "))
	}
	if len(f.filter.Types) > 0 {
		b.WriteString(", only " + joinNames(f.filter.Types, ", ") + " lines")
	}
	if f.filter.Failed {
		b.WriteString(", only failures")
	}
	if f.connections {
		b.WriteString(", one line per connection")
	}
	if f.duration > 0 {
		fmt.Fprintf(&b, ", for %v", f.duration)
	}
	return b.String()
}

// printVersion is the version command.
func printVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "porttrace", version())
	return nil
}

// version is the module version of an installed binary, or the VCS
// revision of a build from a checkout.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return "devel " + s.Value
		}
	}
	return "devel"
}

// joinNames joins the names of things.
func joinNames[T fmt.Stringer](things []T, sep string) string {
	names := make([]string, len(things))
	for i, t := range things {
		names[i] = t.String()
	}
	return strings.Join(names, sep)
}
