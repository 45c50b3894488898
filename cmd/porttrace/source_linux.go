package main

import (
	"context"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return linux.Open(cfg)
}

func snapshotPort(port uint16) (*snapshot.PortReport, error) {
	return linux.Who(port)
}

// judge takes a snapshot of the port, names the owners a running porttrace
// saw, reads the namespace's settings and makes a trial bind.
func judge(ctx context.Context, req why.Request) (*why.Verdict, error) {
	report, err := snapshotPort(req.Port)
	if err != nil {
		return nil, err
	}
	nameSeen(ctx, report)
	sys, err := linux.ReadSystem(req.Port)
	if err != nil {
		return nil, err
	}
	trial, err := linux.TrialBind(req)
	if err != nil {
		return nil, err
	}
	v := why.Judge(req, report, sys, trial)
	return &v, nil
}

// v6onlyDefault is IPV6_V6ONLY as the flag says, or the system's default.
func v6onlyDefault(set, value bool) (bool, error) {
	if set {
		return value, nil
	}
	return linux.BindV6OnlyDefault()
}
