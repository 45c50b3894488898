//go:build linux

package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// goBenchmarks runs the tracer package's Go benchmarks (decoding,
// correlating and formatting, without the kernel) and prints their lines.
func (b *bench) goBenchmarks(ctx context.Context) {
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem"}
	if b.opts.quick {
		args = append(args, "-benchtime", "100ms")
	}
	args = append(args, "./tracer/")
	b.progress("go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, b.goBin, args...)
	cmd.Dir = b.modDir
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(b.out, "\n## c. Go benchmarks: go %s\n\n", strings.Join(args, " "))
	if err != nil {
		b.problem("go benchmarks: %v: %s", err, lastLines(string(out), 5))
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "cpu:") {
			fmt.Fprintln(b.out, line)
		}
	}
}
