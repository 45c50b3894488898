package main

import (
	"errors"
	"path/filepath"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/windows"
)

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return windows.Open(cfg)
}

func snapshotPort(port uint16) (*snapshot.PortReport, error) {
	return windows.Who(port)
}

// processName is the image name of process pid, or why it has none.
func processName(pid uint32) (string, error) {
	path, err := windows.ImagePath(pid)
	if err != nil {
		return "", err
	}
	return filepath.Base(path), nil
}

// readerGone says that a write failed because the reader of a pipe has
// gone (porttrace | more, stopped).
func readerGone(err error) bool {
	return errors.Is(err, xwin.ERROR_BROKEN_PIPE) || errors.Is(err, xwin.ERROR_NO_DATA)
}
