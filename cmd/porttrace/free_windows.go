package main

import (
	"context"
	"io"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
)

// freeCommand is not on Windows yet: TerminateProcess on a tree, checked
// against process creation times, is still to come.
func freeCommand() *command {
	return &command{
		doc: &clidoc.Command{Name: "free", Args: "PORT", Summary: "stop what holds PORT (Linux only for now)", Flags: newFlagSet("porttrace free")},
		run: func(context.Context, []string, io.Writer, io.Writer) error {
			return usageError("porttrace free is not available on Windows yet: taskkill /T /PID PID does it by hand")
		},
	}
}
