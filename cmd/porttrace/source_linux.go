package main

import "github.com/porttrace/porttrace/tracer"

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return tracer.Open(cfg)
}

func portReport(port uint16) (*tracer.PortReport, error) {
	return tracer.Who(port)
}
