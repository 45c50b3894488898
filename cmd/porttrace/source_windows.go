package main

import (
	"context"

	"github.com/porttrace/porttrace/tracer"
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
