package main

import (
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
