//go:build linux

package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// goBenchmarks runs the tracer packages' Go benchmarks (decoding,
// correlating and formatting, without the kernel) and prints their lines.
func (b *bench) goBenchmarks(ctx context.Context) {
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem"}
	if b.opts.quick {
		args = append(args, "-benchtime", "100ms")
	}
	// Every tracer package: the benchmarks live beside what they measure
	// (tracer/linux, tracer/render), not in tracer itself.
	args = append(args, "./tracer/...")
	b.progress("go %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, b.goBin, args...)
	cmd.Dir = b.modDir
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(b.out, "\n## c. Go benchmarks: go %s\n\n", strings.Join(args, " "))
	if err != nil {
		b.problem("go benchmarks: %v: %s", err, lastLines(string(out), 5))
		return
	}
	cpu, benchmarks := false, 0
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "Benchmark"):
			benchmarks++
			fmt.Fprintln(b.out, line)
		case strings.HasPrefix(line, "cpu:") && !cpu: // said once per package
			cpu = true
			fmt.Fprintln(b.out, line)
		}
	}
	if benchmarks == 0 {
		// As after benchmarks moved out of the package named here.
		b.problem("go benchmarks: none ran (go %s)", strings.Join(args, " "))
	}
}
