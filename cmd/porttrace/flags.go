package main

import (
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/porttrace/porttrace/tracer"
)

// flags are porttrace's command-line options.
type flags struct {
	port       uint16
	pid        uint32
	ipv4       bool
	ipv6       bool
	json       bool
	duration   time.Duration
	readyFile  string
	probe      tracer.ProbeMode
	verbose    bool
	version    bool
	bufferSize int
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	var f flags
	var port, probe string
	var bufferMiB int
	fs := pflag.NewFlagSet("porttrace", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: porttrace [flags]\n\nWatch TCP state transitions live, each attributed to the process that owns the socket.\n\nFlags:\n%s", fs.FlagUsages())
	}
	fs.StringVarP(&port, "port", "p", "", "watch only this port (1-65535 or a service name such as http); default: every port")
	fs.Uint32Var(&f.pid, "pid", 0, "show only sockets owned by this process")
	fs.BoolVarP(&f.ipv4, "ipv4", "4", false, "IPv4 only")
	fs.BoolVarP(&f.ipv6, "ipv6", "6", false, "IPv6 only")
	fs.BoolVar(&f.json, "json", false, "print one JSON object per line (fields in the README)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long (e.g. 30s); default: until Ctrl-C or SIGTERM")
	fs.StringVar(&f.readyFile, "ready-file", "", "write this file once every probe is attached")
	fs.StringVar(&probe, "probe", "auto", "hook family: auto, tracepoint or kprobe")
	fs.IntVar(&bufferMiB, "buffer-size", tracer.DefaultBufferSize>>20, "kernel ring buffer size in MiB (a power of two)")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "say which hooks were attached and why")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return nil, err
		}
		return nil, usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usageError("unexpected argument %q (did you mean --port %s?)", fs.Arg(0), fs.Arg(0))
	}
	var err error
	if port != "" {
		if f.port, err = parsePort(port); err != nil {
			return nil, err
		}
	}
	if f.probe, err = tracer.ParseProbeMode(probe); err != nil {
		return nil, usageError("%v", err)
	}
	if f.ipv4 && f.ipv6 {
		return nil, usageError("-4 and -6 exclude each other: give neither to see both")
	}
	if f.duration < 0 {
		return nil, usageError("invalid --duration %v: must not be negative", f.duration)
	}
	if bufferMiB < 1 || bufferMiB > 1024 || bufferMiB&(bufferMiB-1) != 0 {
		return nil, usageError("invalid --buffer-size %d: want a power of two from 1 to 1024 (MiB)", bufferMiB)
	}
	f.bufferSize = bufferMiB << 20
	return &f, nil
}

// parsePort reads a port number or a service name (/etc/services).
func parsePort(s string) (uint16, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		if n < 1 || n > 65535 {
			return 0, usageError("invalid port %s: must be 1-65535", s)
		}
		return uint16(n), nil
	}
	n, err := net.LookupPort("tcp", s)
	if err != nil || n < 1 || n > 65535 {
		return 0, usageError("invalid port %q: not a number in 1-65535 nor a known service name", s)
	}
	return uint16(n), nil
}

func (f *flags) config(stderr io.Writer) tracer.Config {
	cfg := tracer.Config{Port: f.port, Probe: f.probe, BufferSize: f.bufferSize}
	switch {
	case f.ipv4:
		cfg.Family = tracer.FamilyIPv4
	case f.ipv6:
		cfg.Family = tracer.FamilyIPv6
	}
	if f.verbose {
		cfg.Logf = func(format string, args ...any) {
			fmt.Fprintf(stderr, "porttrace: "+format+"\n", args...)
		}
	}
	return cfg
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
