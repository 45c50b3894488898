package main

import "github.com/porttrace/porttrace/tracer"

func openSource(cfg tracer.Config) (tracer.Source, error) {
	return tracer.Open(cfg)
}
