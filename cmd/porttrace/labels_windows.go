package main

import "github.com/porttrace/porttrace/tracer/render"

// lineLabels: Windows has neither network namespaces nor cgroups, and its
// lines no labels.
func lineLabels() (*render.Labels, error) { return nil, nil }
