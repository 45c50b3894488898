package main

import (
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/windows"
)

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return windows.Open(cfg)
}

func portReport(port uint16) (*tracer.PortReport, error) {
	return windows.Who(port)
}
