// Command porttrace shows who owns a port and every TCP state transition on
// it, attributed to the process that owns the socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil || errors.Is(err, pflag.ErrHelp) {
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

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "who":
			return who(ctx, args[1:], stdout, stderr)
		case "why":
			return whyCmd(ctx, args[1:], stdout, stderr)
		case "free":
			return freeCmd(ctx, args[1:], os.Stdin, stdout, stderr)
		}
	}
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stdout, "porttrace", version())
		return nil
	}
	return watch(ctx, f, stdout, stderr)
}
