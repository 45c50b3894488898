package main

import (
	"fmt"

	"github.com/porttrace/porttrace/tracer/linux"
	"github.com/porttrace/porttrace/tracer/render"
)

// netnsLabels labels the watch's lines from network namespaces other than
// its own, as who labels their sockets.
func netnsLabels() (*render.NetNSLabels, error) {
	own, err := linux.CurrentNamespace()
	if err != nil {
		return nil, fmt.Errorf("reading the network namespace: %w", err)
	}
	return render.NewNetNSLabels(own.Inode, linux.LabelOf), nil
}
