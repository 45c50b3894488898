/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types porttrace reads, declared by hand instead of a
 * multi-megabyte vmlinux.h. Every struct is preserve_access_index, so each
 * field access is a CO-RE relocation that libbpf-compatible loaders resolve
 * against the running kernel's BTF: only the field names and types matter,
 * never the offsets written here. Anonymous unions mirror the kernel's so
 * that relocation finds the fields where the kernel nests them.
 */
#ifndef PORTTRACE_KERNEL_H
#define PORTTRACE_KERNEL_H

#include <linux/types.h>
#include <stdbool.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
/* Go listens with MPTCP by default since 1.24: the listening TCP socket is
 * then a subflow of an MPTCP socket, which is what bind(2) sees. */
#define IPPROTO_MPTCP 262
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
/* include/linux/sched.h: task_struct.flags of a kernel thread. */
#define PF_KTHREAD 0x00200000

/* include/net/tcp_states.h */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	__u8 s6_addr[16];
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	union {
		__u64 skc_addrpair;
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		__u32 skc_portpair;
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	unsigned char skc_reuse : 4;
	unsigned char skc_reuseport : 1;
	unsigned char skc_ipv6only : 1;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct list_head {
	struct list_head *next;
	struct list_head *prev;
};

struct kernfs_node {
	__u64 id; /* a cgroup's id (bpf_get_current_cgroup_id) since 5.5 */
};

struct cgroup {
	struct kernfs_node *kn;
};

/* A socket's cgroup: a pointer since 5.15; before, a union whose val is the
 * pointer unless its low bits say it holds net_cls/net_prio data instead. */
struct sock_cgroup_data {
	struct cgroup *cgroup;
};

struct sock_cgroup_data___514 {
	union {
		__u64 val;
	};
};

struct sock {
	struct sock_common __sk_common;
	/* Bitfields before 5.6: read with BPF_CORE_READ_BITFIELD_PROBED. */
	__u16 sk_type;
	__u16 sk_protocol;
	/* The error a failed connect or a reset left, which the kernel sets
	 * before it moves the socket to CLOSE (tcp_done_with_error,
	 * tcp_reset, tcp_write_err). */
	int sk_err;
	struct sock_cgroup_data sk_cgrp_data;
	struct socket *sk_socket;
};

/* inet_sport keeps the local port to the end: skc_num is cleared when the
 * port is released, before the socket's last state change is traced. */
struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
	void *icsk_ulp_data;
};

/* is_mptcp exists only in kernels built with CONFIG_MPTCP (5.6+). */
struct tcp_sock {
	struct inet_connection_sock inet_conn;
	bool is_mptcp;
};

/* The MPTCP types exist only with CONFIG_MPTCP: every read of them is
 * guarded by bpf_core_type_exists. A subflow is a TCP socket whose ULP data
 * is its context, which points to the MPTCP socket (conn); the MPTCP socket
 * lists its subflows' contexts in conn_list. */
struct mptcp_subflow_context {
	struct list_head node;
	struct sock *tcp_sock;
	struct sock *conn;
};

struct mptcp_sock {
	struct inet_connection_sock sk;
	struct list_head conn_list;
};

struct timer_list {
	unsigned long expires;
	void (*function)(struct timer_list *);
};

struct inet_timewait_sock {
	struct sock_common __tw_common;
	volatile unsigned char tw_substate;
	__be16 tw_sport;
	struct timer_list tw_timer;
};

struct socket {
	struct sock *sk;
	struct file *file;
};

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
};

/* A socket and its inode are allocated together (SOCK_INODE). */
struct socket_alloc {
	struct socket socket;
	struct inode vfs_inode;
};

typedef struct {
	long counter;
} atomic_long_t;

/* A file's reference count: f_count until 6.13, then f_ref, which counts
 * from 0 for one reference (include/linux/file_ref.h). */
typedef struct {
	atomic_long_t refcnt;
} file_ref_t;

struct file {
	struct inode *f_inode;
	void *private_data;
	atomic_long_t f_count;
	file_ref_t f_ref;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads not yet exited */
};

struct css_set {
	struct cgroup *dfl_cgrp; /* the cgroup v2 (unified hierarchy) one */
};

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	__u64 start_boottime; /* ns since boot, CLOCK_BOOTTIME (5.5+) */
	char comm[16];
	struct files_struct *files;
	struct signal_struct *signal;
	struct css_set *cgroups;
};

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num; /* how many objects the iterator has passed */
};

/* Context of an iter/task program: one task, a thread of some process. */
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

/* Context of an iter/task_file program: one open file of one process. */
struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
};

/* What the kernel keeps of a loaded eBPF program: active counts its runs
 * under way on each CPU (per-CPU data), the guard that makes the kernel
 * skip a run nested in another (5.12+ for trampolines, 6.2+ for raw
 * tracepoints, and backported to some stable kernels before). */
struct bpf_prog_aux {
	__u32 id;
};

struct bpf_prog {
	int *active;
	struct bpf_prog_aux *aux;
};

/* Context of an iter/bpf_prog program: one loaded program. */
struct bpf_iter__bpf_prog {
	struct bpf_iter_meta *meta;
	struct bpf_prog *prog;
};

/* An array map: pptrs[0] is a per-CPU array's first value, as a per-CPU
 * pointer (the kernel nests it in an anonymous struct too, since 6.4). */
struct bpf_array {
	union {
		void *pptrs[0];
	};
};

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

/* Contexts of the classic (tracefs) tracepoints. */
struct trace_event_raw_inet_sock_set_state {
	struct trace_entry ent;
	const void *skaddr;
	int oldstate;
	int newstate;
};

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

#pragma clang attribute pop

/*
 * Register layouts for kprobe contexts, with the user-space (uapi) names
 * that bpf_tracing.h's PT_REGS_* macros expect outside the kernel. These are
 * ABI, read directly from the context, not relocated.
 */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
	unsigned long rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
};
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs;
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#else
#error "porttrace's eBPF programs are built for x86 and arm64 only"
#endif

#endif /* PORTTRACE_KERNEL_H */
