// Package bpf holds porttrace's eBPF programs. The C source is compiled by
// bpf2go into the committed porttrace_*_bpfel.{go,o} files, so building
// porttrace needs no clang; `make generate` rebuilds them.
package bpf

// include/ holds the libbpf headers (see update-libbpf-headers.sh), so
// regenerating needs no libbpf-dev. BPF2GO_CFLAGS comes from the Makefile:
// it adds the multiarch include folder that <linux/types.h> needs on Debian.
//go:generate go tool bpf2go -target amd64,arm64 -type event -type prog_guard Porttrace porttrace.bpf.c -- -Iinclude -O2 -g -Wall -Werror
//go:generate go tool bpf2go -target amd64,arm64 -type owner -type held_socket -type sock_refs Owners owners.bpf.c -- -Iinclude -O2 -g -Wall -Werror
