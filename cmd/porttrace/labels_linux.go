package main

import (
	"fmt"

	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/render"
)

// lineLabels names what the watch's lines carry as numbers: the network
// namespaces other than its own, labelled as who labels their sockets, and
// the owners' cgroups, with their containers.
func lineLabels() (*render.Labels, error) {
	own, err := linux.CurrentNamespace()
	if err != nil {
		return nil, fmt.Errorf("reading the network namespace: %w", err)
	}
	return &render.Labels{OwnNetNS: own.Inode, NetNSName: linux.LabelOf, Cgroup: watchResolver().CgroupByID}, nil
}
