/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What both programs read from a socket: what it is, its endpoints, its
 * network namespace and its cgroup. A full socket and a timewait socket
 * both start with struct sock_common, which holds the endpoints but the
 * local port: each keeps that in a field of its own (see inet_sock in
 * kernel.h).
 */
#ifndef PORTTRACE_SOCK_H
#define PORTTRACE_SOCK_H

#include "kernel.h"
#include "read.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

/* porttrace reports IPv4 and IPv6 sockets only. */
static __always_inline bool inet_family(__u16 family)
{
	return family == AF_INET || family == AF_INET6;
}

static __always_inline __u16 sock_family(struct sock_common *skc, bool direct)
{
	return READ(direct, skc, skc_family);
}

/* A TCP socket: a stream socket of IPPROTO_TCP (a raw socket of that
 * protocol is not). */
static __always_inline bool tcp_socket(struct sock *sk, bool direct)
{
	return READ_BITFIELD(direct, sk, sk_type) == SOCK_STREAM &&
	       READ_BITFIELD(direct, sk, sk_protocol) == IPPROTO_TCP;
}

/* Whether a socket holds a port: a TCP, MPTCP or UDP socket of the inet
 * families. Raw sockets keep their protocol in the port field, ping sockets
 * their ICMP identifier; neither holds a port, nor does any socket of
 * another family. */
static __always_inline bool holds_port(struct sock *sk, bool direct)
{
	if (!inet_family(sock_family((struct sock_common *)sk, direct)))
		return false;
	__u16 type = READ_BITFIELD(direct, sk, sk_type);
	__u16 proto = READ_BITFIELD(direct, sk, sk_protocol);
	if (type == SOCK_STREAM)
		return proto == IPPROTO_TCP || proto == IPPROTO_MPTCP;
	return type == SOCK_DGRAM && proto == IPPROTO_UDP;
}

/* inet_sport keeps the local port to the end (see kernel.h). It lies past
 * struct sock: read in place only where the verifier knows sk for an
 * inet_sock or larger (bpf_skc_to_tcp_sock's answer), never a plain sock. */
static __always_inline __u16 sock_sport(struct sock *sk, bool direct)
{
	return bpf_ntohs(READ(direct, (struct inet_sock *)sk, inet_sport));
}

static __always_inline __u16 timewait_sport(struct inet_timewait_sock *tw, bool direct)
{
	return bpf_ntohs(READ(direct, tw, tw_sport));
}

static __always_inline __u16 sock_dport(struct sock_common *skc, bool direct)
{
	return bpf_ntohs(READ(direct, skc, skc_dport));
}

/* The inode number of the socket's network namespace. */
static __always_inline __u32 sock_netns(struct sock_common *skc, bool direct)
{
	return READ(direct, skc, skc_net.net, ns.inum);
}

/* The socket's inode number, as sock_diag and /proc/PID/fd name the socket
 * (the kernel's sock_i_ino()), 0 for a socket no file refers to. */
static __always_inline __u64 sock_inode(struct sock *sk)
{
	struct socket *socket = BPF_CORE_READ(sk, sk_socket);

	if (!socket)
		return 0;
	return BPF_CORE_READ((struct socket_alloc *)socket, vfs_inode.i_ino);
}

/* The id of the socket's cgroup v2 cgroup, which `ss --cgroup` shows: the
 * cgroup of the process that created it (for an accepted socket, the
 * listener's). 0 where the kernel keeps none (no CONFIG_SOCK_CGROUP_DATA,
 * or, before 5.15, a socket whose cgroup data went to net_cls/net_prio). */
static __always_inline __u64 sock_cgroup_id(struct sock *sk, bool direct)
{
	if (!bpf_core_field_exists(sk->sk_cgrp_data))
		return 0;
	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup)) {
		struct cgroup *cgrp = READ(direct, sk, sk_cgrp_data.cgroup);
		return cgrp ? READ(direct, cgrp, kn, id) : 0;
	}
	/* Before 5.15. The pointer is a number to the verifier: read through
	 * the helper. */
	struct sock_cgroup_data___514 *old = (void *)&sk->sk_cgrp_data;
	__u64 val = BPF_CORE_READ(old, val);
	/* The low bits mark net_cls/net_prio data, not a pointer. */
	if (!val || (val & 3))
		return 0;
	return BPF_CORE_READ((struct cgroup *)val, kn, id);
}

/* Local and remote address into 16-byte buffers. An IPv4 address takes the
 * first 4 bytes; the rest keep what the caller put there (zeros). */
static __always_inline void sock_addrs(struct sock_common *skc, __u16 family, __u8 *saddr, __u8 *daddr, bool direct)
{
	if (family == AF_INET) {
		READ_BYTES(direct, saddr, 4, &skc->skc_rcv_saddr);
		READ_BYTES(direct, daddr, 4, &skc->skc_daddr);
	} else {
		READ_BYTES(direct, saddr, 16, &skc->skc_v6_rcv_saddr);
		READ_BYTES(direct, daddr, 16, &skc->skc_v6_daddr);
	}
}

/* The first TCP subflow of an MPTCP socket, or NULL: the TCP socket whose
 * state changes the tracer sees for it (a listener's too: its subflow is
 * the one in LISTEN). */
static __always_inline struct sock *mptcp_first_subflow(struct sock *sk)
{
	if (!bpf_core_type_exists(struct mptcp_sock) || !bpf_core_type_exists(struct mptcp_subflow_context))
		return NULL;
	struct mptcp_sock *msk = (struct mptcp_sock *)sk;
	struct list_head *node = BPF_CORE_READ(msk, conn_list.next);
	if (!node || node == &msk->conn_list)
		return NULL;
	struct mptcp_subflow_context *ctx = (void *)node - bpf_core_field_offset(struct mptcp_subflow_context, node);
	return BPF_CORE_READ(ctx, tcp_sock);
}

#endif /* PORTTRACE_SOCK_H */
