//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Who holds a port: walk every open file of every process in the kernel and
 * write out the sockets bound to one port or connected to it, with the
 * process holding them.
 * Userspace then reads /proc only for those few processes, so the cost does
 * not grow with processes and sockets that have nothing to do with the port
 * (ss -p and lsof read every /proc/PID/fd link).
 */
#include "kernel.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "sock.h"
#include "task.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* Set by user space before loading: the port, or 0 for every socket (the
 * daemon's starting snapshot). */
const volatile __u16 owner_port = 0;

/* Set by user space where the kernel has bpf_sock_from_file for iterators
 * (5.11+): the socket is then read in place (read.h), a dozen helper calls
 * fewer for each of a busy port's tens of thousands of sockets. */
const volatile bool sock_in_place = false;

/* One socket held by one process. Go decodes it by hand; a test checks the
 * decoder against the layout bpf2go generates from this. */
struct owner {
	__u64 sock;      /* struct sock *, the key of the tracer's events */
	__u64 inode;     /* socket inode, the key of sock_diag */
	__u64 start_ns;  /* the process's start time (task.h) */
	__u64 cgroup_id; /* the process's cgroup v2 id */
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 pid;
	__u32 netns;
	__u16 family;
	__u16 proto;
	__u16 sport;
	__u16 dport;
	__u8 state;
	__u8 v6only;
	__u8 _pad[2];
	__u32 fd;      /* the process's descriptor for the socket */
	char comm[16]; /* the process's name */
	__u64 subflow; /* an MPTCP socket's first TCP subflow, whose
			* struct sock the tracer's events name; else 0 */
};

const struct owner *const owner_type = 0;

SEC("iter/task_file")
int socket_owners(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	if (!file || !task)
		return 0;
	/* The file, its inode and the task are read in place (read.h); the
	 * socket too where bpf_sock_from_file gives it its type, otherwise
	 * (private_data is a void *) through the helper. */
	struct inode *inode = file->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK)
		return 0;
	const bool direct = sock_in_place;
	struct sock *sk;
	if (direct) {
		struct socket *socket = bpf_sock_from_file(file);
		if (!socket)
			return 0;
		sk = socket->sk;
	} else {
		struct socket *socket = file->private_data;
		sk = BPF_CORE_READ(socket, sk);
	}
	if (!sk)
		return 0;
	if (!holds_port(sk, direct))
		return 0;
	/* Both sides of the port: what serves on it and what connects to it.
	 * The local port lies past struct sock, which is all the verifier
	 * knows sk for: through the helper either way (sock.h). */
	struct sock_common *skc = (struct sock_common *)sk;
	__u16 sport = sock_sport(sk, false);
	__u16 dport = sock_dport(skc, direct);
	if (owner_port != 0 && sport != owner_port && dport != owner_port)
		return 0;
	__u16 family = sock_family(skc, direct);

	struct owner o = {
		.sock = (__u64)sk,
		.inode = inode->i_ino,
		.start_ns = process_start_ns(task, true),
		.cgroup_id = task_cgroup_id(task, true),
		.pid = task->tgid,
		.netns = sock_netns(skc, direct),
		.family = family,
		.proto = READ_BITFIELD(direct, sk, sk_protocol),
		.sport = sport,
		.dport = dport,
		.fd = ctx->fd,
		.state = READ(direct, skc, skc_state),
		.v6only = READ_BITFIELD(direct, skc, skc_ipv6only),
	};
	if (o.proto == IPPROTO_MPTCP)
		o.subflow = (__u64)mptcp_first_subflow(sk);
	process_comm(task, o.comm, true);
	sock_addrs(skc, family, o.saddr, o.daddr, direct);
	bpf_seq_write(ctx->meta->seq, &o, sizeof(o));
	return 0;
}

/*
 * Who else holds an owner's sockets (the daemon's who). The daemon knows
 * the process that bound, listened or accepted; a fork may have left the
 * descriptor with its children too (a pre-fork server's workers), or with
 * a child alone (a connection a master accepted and handed to the child
 * it forked). The daemon names those owners in subjects; the iterator
 * writes the sockets held by the processes descended from them (or by
 * the owners themselves, when asked), read from their descriptor tables
 * in place, with no /proc and no privilege beyond the iterator's.
 */

/* A socket's file counts its references, one per descriptor in any
 * process (a fork takes one for each descriptor it copies) and a moment's
 * more while a system call uses it. The daemon puts the sockets it asks
 * about in ref_socks (struct sock pointers, as the tracer's events name
 * them, from the first element up to the first 0), and the socket_refs
 * iterator writes their counts and inodes (a pointer the kernel has given
 * to another socket since names another inode): with one reference, one
 * table holds the socket, and the daemon reads the owner's alone to learn
 * whose it is. */
#define MAX_REF_SOCKS 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REF_SOCKS);
	__type(key, __u32);
	__type(value, __u64); /* struct sock *, or 0: the end */
} ref_socks SEC(".maps");

struct sock_refs {
	__u64 sock;
	__u64 refs;  /* 0: the socket has no file (closed meanwhile) */
	__u64 inode; /* of the socket the pointer names now */
};

const struct sock_refs *const sock_refs_type = 0;

static __always_inline void write_sock_refs(struct seq_file *seq, __u64 sock)
{
	struct sock_refs out = {.sock = sock};
	/* The socket may have been freed since the daemon looked it up, its
	 * memory given to another socket or to nothing: read through the
	 * helper, with the inode that tells which socket it is now. */
	struct sock *sk = (struct sock *)sock;
	struct socket *socket = BPF_CORE_READ(sk, sk_socket);
	if (!socket)
		goto out;
	out.inode = BPF_CORE_READ((struct socket_alloc *)socket, vfs_inode.i_ino);
	struct file *file = BPF_CORE_READ(socket, file);
	if (file) {
		if (bpf_core_field_exists(file->f_ref)) {
			long refcnt = BPF_CORE_READ(file, f_ref.refcnt.counter);
			out.refs = refcnt >= 0 ? refcnt + 1 : 0; /* negative: released */
		} else {
			out.refs = BPF_CORE_READ(file, f_count.counter);
		}
	}
out:
	bpf_seq_write(seq, &out, sizeof(out));
}

/* A task iterator, run for its first task only: it reads ref_socks in a
 * bounded loop. The iterator over a map's elements (iter/bpf_map_elem),
 * made for this, is refused with EPERM on some kernels that load every
 * other iterator (this project's CI machines). */
SEC("iter/task")
int socket_refs(struct bpf_iter__task *ctx)
{
	if (ctx->meta->seq_num != 0)
		return 0;
	/* A 64-bit count: spilled to the stack whole, it keeps the value
	 * the verifier follows the loop by (a 32-bit spill loses it). */
	for (__u64 i = 0; i < MAX_REF_SOCKS; i++) {
		__u32 key = i;
		__u64 *sock = bpf_map_lookup_elem(&ref_socks, &key);
		if (!sock || !*sock)
			break;
		write_sock_refs(ctx->meta->seq, *sock);
	}
	return 0;
}

#define MAX_SUBJECTS 64
/* How far up a process's forebears are looked at. */
#define MAX_GENERATIONS 16
/* Descriptor slots read of one process; a process with more is reported
 * as such, and the daemon walks instead. */
#define MAX_FD_SLOTS 2048

enum subject_scan {
	SCAN_DESCENDANTS = 1, /* the sockets of the process's descendants */
	SCAN_SELF = 2,        /* the process's own sockets */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SUBJECTS);
	__type(key, __u32);  /* tgid */
	__type(value, __u8); /* enum subject_scan bits */
} subjects SEC(".maps");

/* A socket a process holds; or, with inode 0 and fd -1, a process with
 * more than MAX_FD_SLOTS descriptor slots, whose sockets are not read. */
struct held_socket {
	__u64 start_ns; /* the process's (task.h) */
	__u64 inode;
	__u32 pid;
	__s32 fd;
};

const struct held_socket *const held_socket_type = 0;

static __always_inline bool scanned(__u32 tgid, __u8 scan)
{
	__u8 *bits = bpf_map_lookup_elem(&subjects, &tgid);
	return bits && (*bits & scan);
}

static __always_inline bool descends_from_subject(struct task_struct *task)
{
	struct task_struct *forebear = task;
	for (int i = 0; i < MAX_GENERATIONS; i++) {
		forebear = forebear->real_parent;
		if (!forebear)
			return false;
		__u32 tgid = forebear->tgid;
		if (tgid == 0) /* past init: the idle task */
			return false;
		if (scanned(tgid, SCAN_DESCENDANTS))
			return true;
	}
	return false;
}

SEC("iter/task")
int held_sockets(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	/* The iterator visits every thread: a process is looked at once, by
	 * its leader (its threads share its descriptor table). */
	if (!task || task->pid != task->tgid)
		return 0;
	if (!scanned(task->tgid, SCAN_SELF) && !descends_from_subject(task))
		return 0;
	struct held_socket h = {.start_ns = process_start_ns(task, true), .pid = task->tgid};
	/* The table is read through the helper: its array of files is indexed
	 * by a number the verifier cannot bound. A table replaced meanwhile
	 * (a process opening files) is freed after an RCU grace period, which
	 * an iterator's run does not outlast. */
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return 0;
	unsigned int slots = BPF_CORE_READ(fdt, max_fds);
	if (slots > MAX_FD_SLOTS) {
		h.fd = -1;
		bpf_seq_write(ctx->meta->seq, &h, sizeof(h));
		return 0;
	}
	struct file **files = BPF_CORE_READ(fdt, fd);
	for (__u32 fd = 0; fd < MAX_FD_SLOTS && fd < slots; fd++) {
		struct file *file = NULL;
		bpf_probe_read_kernel(&file, sizeof(file), &files[fd]);
		if (!file)
			continue;
		struct inode *inode = BPF_CORE_READ(file, f_inode);
		if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFSOCK)
			continue;
		h.inode = BPF_CORE_READ(inode, i_ino);
		h.fd = fd;
		bpf_seq_write(ctx->meta->seq, &h, sizeof(h));
	}
	return 0;
}
