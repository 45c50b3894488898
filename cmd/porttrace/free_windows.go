package main

import (
	"context"
	"io"
)

// freeCmd is not on Windows yet: TerminateProcess on a tree, checked
// against process creation times, is still to come.
func freeCmd(context.Context, []string, io.Reader, io.Writer, io.Writer) error {
	return usageError("porttrace free is not available on Windows yet: taskkill /T /PID PID does it by hand")
}
