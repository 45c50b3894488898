package main

import (
	"context"
	"errors"
	"path/filepath"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/filter"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
	"github.com/porttrace/porttrace/windows"
)

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return windows.Open(cfg)
}

func snapshotPort(port uint16) (*snapshot.PortReport, error) {
	return windows.Who(port)
}

// snapshotTraced is what a watch or top starts from: port's sockets (0:
// every socket).
func snapshotTraced(port uint16) (*snapshot.PortReport, error) { return windows.Who(port) }

// snapshotIn answers who from the system's tables: Windows has no network
// namespaces to choose from (compartments aside).
func snapshotIn(port uint16, netns string, all bool) (*snapshot.PortReport, error) {
	if netns != "" || all {
		return nil, usageError("--netns and --all-netns are Linux's: Windows has no network namespaces")
	}
	return windows.Who(port)
}

// judge takes a snapshot of the port, names the owners a running porttrace
// saw, makes a trial bind and asks Windows what its tables cannot say (an
// excluded port range, HTTP.sys). Windows has none of Linux's port
// sysctls.
func judge(ctx context.Context, req why.Request) (*why.Verdict, error) {
	report, err := snapshotPort(req.Port)
	if err != nil {
		return nil, err
	}
	nameSeen(ctx, report)
	trial, err := windows.TrialBind(req)
	if err != nil {
		return nil, err
	}
	v := why.Judge(req, report, windows.ReadSystem(ctx, req, report, trial), trial)
	return &v, nil
}

// v6onlyDefault: Windows sockets are IPV6_V6ONLY unless told otherwise.
func v6onlyDefault(set, value bool) (bool, error) {
	if set {
		return value, nil
	}
	return true, nil
}

func parentOf(id proc.Identity) (proc.Identity, error) { return windows.Parent(id) }

// containerTest: Windows' events carry no cgroup to tell a container by.
func containerTest(string) (*filter.Container, string, error) {
	return nil, "", usageError("--container is Linux's: Windows' events do not say which container a process runs in")
}

// processName is the image name of process pid, or why it has none.
func processName(pid uint32) (string, error) {
	path, err := windows.ImagePath(pid)
	if errors.Is(err, xwin.ERROR_INVALID_PARAMETER) {
		// What OpenProcess says of a pid no process has.
		return "", errors.New("no such process")
	}
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
