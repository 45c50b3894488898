// Command porttrace shows who owns a port and every TCP state transition on
// it, attributed to the process that owns the socket.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

// stopSignals end any command the way Ctrl-C does: a watch prints its
// summary and removes its API socket. (A watch adds SIGPIPE.)
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

func main() {
	signals := stopSignals
	if len(os.Args) > 1 && os.Args[1] == "daemon" {
		// The daemon reopens its log on SIGHUP, as logrotate expects.
		signals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGQUIT}
	}
	ctx, stop := signal.NotifyContext(context.Background(), signals...)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	code := 1
	var exit exitError
	if errors.As(err, &exit) {
		code = exit.code
	}
	if err.Error() != "" {
		fmt.Fprintf(os.Stderr, "porttrace: %v\n", err)
	}
	os.Exit(code)
}

// exitError carries an exit status other than 1: 2 for bad usage, or a
// quiet 1 for a question answered "no" (a port nobody holds).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func usageError(format string, args ...any) error {
	return exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

// run runs the command that args name (the watch when they name none).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCLI()
	cmd := c.commands[0]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if named := c.find(args[0]); named != nil {
			cmd, args = named, args[1:]
		}
	}
	fs := cmd.doc.Flags
	if err := fs.Parse(args); err != nil {
		return usageError("%v", err)
	}
	if help, _ := fs.GetBool("help"); help {
		c.program.Help(stdout, cmd.doc)
		return nil
	}
	if cmd.doc.Args == "" && fs.NArg() > 0 {
		return c.unexpected(cmd, fs.Arg(0))
	}
	if cmd.snapshot {
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(snapshotMemoryLimit)
	}
	if cmd.traces {
		oneProcessor()
	}
	if !cmd.answers {
		return cmd.run(ctx, fs.Args(), stdout, stderr)
	}
	out := bufio.NewWriter(stdout)
	err := cmd.run(ctx, fs.Args(), out, stderr)
	if flushErr := out.Flush(); err == nil && flushErr != nil {
		err = fmt.Errorf("writing the answer: %w", flushErr)
	}
	return err
}

// newFlagSet makes a command's flag set: errors come back to run, which
// prints them in one line, and flags are listed in the order defined.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false
	return fs
}
