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
)

// watchFlags are the watch's options: as typed, and as check makes them.
type watchFlags struct {
	portSpecs []string
	probeName string
	bufferMiB int

	ports     tracer.Ports
	portNames []tracer.PortName
	pid       uint32
	pidComm   string
	ipv4      bool
	ipv6      bool
	json      bool
	duration  time.Duration
	readyFile string
	probe     tracer.ProbeMode
	verbose   bool
	version   bool
	// bufferSize is in bytes.
	bufferSize int
}

// define defines the watch's flags on fs.
func (f *watchFlags) define(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&f.portSpecs, "port", "p", nil, "watch only these `PORTS`, at either end of a socket: 8080, 80,443, 8000-8100 or a service name (http); repeated, the lists are merged; default: every port")
	fs.Uint32Var(&f.pid, "pid", 0, "show only the sockets this `PID` owns")
	fs.BoolVarP(&f.ipv4, "ipv4", "4", false, "IPv4 only")
	fs.BoolVarP(&f.ipv6, "ipv6", "6", false, "IPv6 only")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per line (fields in the README)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this `DURATION` (30s, 5m); default: at Ctrl-C or SIGTERM")
	fs.StringVar(&f.readyFile, "ready-file", "", "write this `FILE` (porttrace's pid) once every probe is attached")
	clidoc.File(fs, "ready-file")
	fs.StringVar(&f.probeName, "probe", "auto", "hook `FAMILY`: auto, tracepoint or kprobe")
	clidoc.Values(fs, "probe", "auto", "tracepoint", "kprobe")
	fs.IntVar(&f.bufferMiB, "buffer-size", tracer.DefaultBufferSize>>20, "kernel ring buffer size in `MiB`, a power of two")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "say which hooks were attached and why")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
}

// watchCommand is porttrace without a command: the live watch.
func watchCommand() *command {
	var f watchFlags
	fs := newFlagSet("porttrace")
	f.define(fs)
	return &command{
		doc: &clidoc.Command{
			Summary: "watch TCP state transitions and binds live",
			Flags:   fs,
		},
		run: func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
			if f.version {
				return printVersion(ctx, nil, stdout, stderr)
			}
			if err := f.check(); err != nil {
				return err
			}
			return watch(ctx, &f, stdout, stderr)
		},
	}
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
		fmt.Fprintf(&b, ", sockets of process %d (%s)", f.pid, f.pidComm)
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
