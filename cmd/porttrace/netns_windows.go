package main

import "github.com/porttrace/porttrace/tracer/render"

// netnsLabels: Windows has no network namespaces, and its lines no labels.
func netnsLabels() (*render.NetNSLabels, error) { return nil, nil }
