/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef PORTTRACE_READ_H
#define PORTTRACE_READ_H

#include <bpf/bpf_core_read.h>

/*
 * Every read of a kernel structure comes in two ways, chosen by `direct`:
 * in place, a plain load the kernel guards, where the verifier knows the
 * pointer's BTF type (a tp_btf program's arguments, an iterator's context,
 * what bpf_skc_to_tcp_sock and bpf_get_current_task_btf return), or
 * through bpf_probe_read_kernel, a helper call each, anywhere else (raw_tp,
 * kprobes, tracefs tracepoints, a pointer computed by hand). Each event
 * takes some twenty reads: in place they cost a few nanoseconds instead of
 * some twenty each. `direct` is a constant in every program, so the other
 * way is gone from it before the verifier sees it, or skipped by it.
 */
#define READ(direct, src, a, ...)                                            \
	((direct) ? ___arrow((src), a, ##__VA_ARGS__) : BPF_CORE_READ((src), a, ##__VA_ARGS__))
#define READ_BITFIELD(direct, s, field)                                     \
	((direct) ? BPF_CORE_READ_BITFIELD(s, field) : BPF_CORE_READ_BITFIELD_PROBED(s, field))
/* n bytes of a field into a buffer. */
#define READ_BYTES(direct, dst, n, src_field)                               \
	do {                                                                 \
		if (direct)                                                  \
			__builtin_memcpy((dst), (src_field), (n));           \
		else                                                         \
			bpf_core_read((dst), (n), (src_field));              \
	} while (0)

#endif /* PORTTRACE_READ_H */
