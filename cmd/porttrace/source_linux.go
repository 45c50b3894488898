package main

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return linux.Open(cfg)
}

func snapshotPort(port uint16) (*snapshot.PortReport, error) {
	return linux.Who(port)
}
