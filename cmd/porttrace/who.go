package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// who answers "who owns this port?" once and exits: status 0 when a process
// holds the port, 1 when none does, so scripts can test it.
func who(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("porttrace who", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: porttrace who PORT [--json]\n\nEvery process that holds PORT (1-65535 or a service name), with what it holds;\nexit status 1 if no process holds it.\n\nFlags:\n%s", fs.FlagUsages())
	}
	asJSON := fs.Bool("json", false, "print one JSON object (fields in the README)")
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return err
		}
		return usageError("%v", err)
	}
	if fs.NArg() != 1 {
		return usageError("who takes one port, e.g. porttrace who 8080")
	}
	port, err := parsePort(fs.Arg(0))
	if err != nil {
		return err
	}
	report, err := portReport(port)
	if err != nil {
		return err
	}
	if *asJSON {
		err = report.WriteJSON(stdout)
	} else {
		report.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if !report.Held() {
		return exitError{code: 1}
	}
	return nil
}
