//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * porttrace's kernel side: report TCP state changes, accepts, binds, the
 * life of timewait sockets and the exits of processes into one ring buffer.
 *
 * Each hook exists in several forms (tp_btf, raw_tp, classic tracepoint,
 * kprobe) because kernels differ in what they offer. Every form is a thin
 * wrapper around one handler; user space deletes the forms it does not use
 * from the collection before loading.
 */
#include "kernel.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "sock.h"
#include "task.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before loading. 0 means "no filter". */
const volatile __u8 filter_ports_on = 0;
/* The watched ports when filter_ports_on: bit p%8 of byte p/8 is port p. A
 * bitmap answers for any list or range of ports with one load, where a
 * hash map would cost a helper call on every event. */
const volatile __u8 filter_ports[65536 / 8] = {};
const volatile __u16 filter_family = 0; /* AF_INET or AF_INET6: see traffic_wanted */
/* Kernel address of tw_timer_handler, to recognise timewait timers. */
const volatile __u64 tw_timer_handler_addr = 0;
/* Length of one jiffy in nanoseconds (1e9 / CONFIG_HZ). */
const volatile __u64 jiffy_ns = 0;
/* What may be read in place (read.h), as user space found the kernel to
 * allow: in tp_btf programs, a TCP socket through bpf_skc_to_tcp_sock
 * (5.9+), whose answer the verifier knows for a tcp_sock (it knows the
 * tracepoint's argument for a plain sock, which ends before the local
 * port); in every program, the current task through
 * bpf_get_current_task_btf (5.11+, for every tracing program type). */
const volatile __u8 btf_sock_reads = 0;
const volatile __u8 task_reads = 0;
/* And, where bpf_rdonly_cast (6.2+) may be called, the sockets found by
 * hand, as a descriptor's (accept, bind) or a timer's (timewait): the
 * kfunc gives such a pointer its type, after which loads through it are
 * plain ones the kernel guards. Weak: where the kernel lacks it, cast_reads
 * is 0 and the verifier never reaches the call. */
const volatile __u8 cast_reads = 0;

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

#define CAST(type, p) ((type *)bpf_rdonly_cast((p), bpf_core_type_id_kernel(type)))

enum event_kind {
	EVENT_STATE = 1,
	EVENT_BIND,
	EVENT_ACCEPT,
	EVENT_CONNECT, /* never emitted on Linux; keeps numbering aligned with Go */
	EVENT_TIMEWAIT_START,
	EVENT_TIMEWAIT_CANCEL,
	EVENT_TIMEWAIT_EXPIRE,
	EVENT_EXIT,
};

/* struct event's flags. */
#define EVENT_KTHREAD 1 /* the task on the CPU is a kernel thread */

/* The one record type of the ring buffer. Go decodes it by hand; a test
 * checks that decoder against the layout bpf2go generates from this. */
struct event {
	__u64 ts_ns;          /* CLOCK_MONOTONIC */
	__u64 sock;           /* struct sock * or struct inet_timewait_sock * */
	__s64 timeout_ns;     /* timewait timer: time left at ts_ns (< 0: overdue) */
	__u64 parent;         /* an MPTCP subflow's MPTCP socket, else 0 */
	__u64 start_ns;       /* start time of the process on the CPU (task.h) */
	__u64 cgroup_id;      /* cgroup v2 id of the task on the CPU */
	__u64 sock_cgroup_id; /* the socket's own cgroup (sock.h), else 0 */
	__u8 saddr[16];       /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];       /* remote address */
	__u32 pid;            /* tgid of the task on the CPU */
	__u32 netns;          /* network namespace inode */
	__s32 err;            /* bind(2) return value; -sk_err on a move to CLOSE */
	__u16 sport;          /* local port, host order */
	__u16 dport;          /* remote port, host order */
	__u16 family;         /* AF_INET or AF_INET6; 0 for an exit */
	__u16 proto;          /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_MPTCP */
	__u8 kind;            /* enum event_kind */
	__u8 oldstate;
	__u8 newstate;
	__u8 flags;           /* EVENT_KTHREAD */
	char comm[16];        /* the process's name (its leader's) */
	char thread[16];      /* the name of the thread on the CPU */
	__u64 inode;          /* a new listener's inode (sock.h), else 0 */
	__u32 ppid;           /* the parent of the process on the CPU */
};

/* Puts struct event into the object's BTF, for bpf2go to generate its Go
 * twin; a const pointer lands in .rodata, which exists anyway. */
const struct event *const event_type = 0;

/* The ring buffer the programs write while the reader keeps up: small
 * enough that its lines are still in the CPU caches when the programs come
 * round to them again. A ring the size of a burst is written a line the
 * caches have long evicted at each event, which made a storm some 1-2%
 * slower (BENCHMARKS.md, thirteenth and fourteenth sessions). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 << 20); /* resized by user space */
} events SEC(".maps");

/* The room for a burst: the programs write here from the moment events is
 * full until the reader has read all of it, so that what lies here comes
 * after what lies in events, and the reader reads each to its end in turn
 * (tracer/linux/ring_linux.go). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* resized by user space */
} overflow SEC(".maps");

/* Events that found the ring buffer full, per CPU so that counting them
 * costs no atomic operation on the path that is already overloaded. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Runs of a hook's first program that its second program made instead
 * (see "Runs the kernel skips"), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} rescued SEC(".maps");

/* The hooks that have a second program, as indexes into struct running. */
enum rescued_hook {
	HOOK_STATE,
	HOOK_TIMER_START,
	HOOK_TIMER_CANCEL,
	HOOK_TIMER_EXPIRE,
	RESCUED_HOOKS,
};

/* Whether a hook's first program is under way on this CPU, by its mark. */
struct running {
	__u8 first[RESCUED_HOOKS];
	/* A pointer stored here and read back is a number: the verifier
	 * lets a privileged program compute with it only then. */
	__u64 through;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct running);
} running SEC(".maps");

/* A bind(2)'s arguments; between its entry and exit by thread, where the
 * exit cannot read them (see bind_exit_regs). */
struct bind_args {
	__u64 fd;
	__u8 addr[16];
	__u16 family;
	__u16 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct bind_args);
} binds SEC(".maps");


static __always_inline bool port_watched(__u16 port)
{
	__u32 byte = port >> 3;

	/* Verifiers before 6.x leave the result of a byte swap (bpf_ntohs)
	 * unbounded, so the index is bounded again, behind a barrier that
	 * keeps the compiler from dropping a mask it knows is redundant. */
	barrier_var(byte);
	byte &= sizeof(filter_ports) - 1;
	return filter_ports[byte] & (1 << (port & 7));
}

static __always_inline bool port_wanted(__u16 a, __u16 b)
{
	return !filter_ports_on || port_watched(a) || port_watched(b);
}

/* An IPv6 address, as four words, that is :: or an IPv4-mapped one. */
static __always_inline bool unspecified6(const __u32 a[4])
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

static __always_inline bool ipv4_mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Whether the watch wants the traffic of a socket of family with these ends
 * (an IPv4 address in the first word). A connection is IPv4 when its
 * addresses are IPv4 or IPv4-mapped (the IPv4 peers of a dual-stack
 * socket), whichever family its socket is; a socket without a peer goes by
 * its local address, and an IPv6 wildcard one that is not IPV6_V6ONLY
 * serves both families. tracer.Family.Carries is the same rule for the
 * snapshot a watch starts from. */
static __always_inline bool traffic_wanted(__u16 family, const __u32 saddr[4], const __u32 daddr[4], bool v6only)
{
	if (filter_family == 0)
		return true;
	if (family == AF_INET)
		return filter_family == AF_INET;
	const __u32 *addr = unspecified6(daddr) ? saddr : daddr;
	if (ipv4_mapped(addr))
		return filter_family == AF_INET;
	if (unspecified6(addr) && !v6only)
		return true;
	return filter_family == AF_INET6;
}

/* Reserves an event, in events while the reader keeps up and in overflow
 * while events is full and until the reader has read overflow to its end
 * (what the query counts includes records reserved and not yet
 * submitted), and, with task, fills in the current process, read in
 * place where the kernel allows (task_reads). Without, the process fields
 * stay 0: the event comes from a softirq or a timer, where the task on the
 * CPU is whichever it interrupted, and reading it cost a fifth of a state
 * change's program. */
static __always_inline struct event *reserve(__u8 kind, bool task_wanted)
{
	struct event *e = NULL;
	if (!bpf_ringbuf_query(&overflow, BPF_RB_AVAIL_DATA))
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		e = bpf_ringbuf_reserve(&overflow, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *count = bpf_map_lookup_elem(&lost, &zero);
		if (count)
			(*count)++;
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	if (!task_wanted)
		return e;

	bool direct = task_reads;
	struct task_struct *task = current_task(direct);
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->start_ns = process_start_ns(task, direct);
	e->ppid = process_parent(task, direct);
	e->cgroup_id = bpf_get_current_cgroup_id();
	if (READ(direct, task, flags) & PF_KTHREAD)
		e->flags = EVENT_KTHREAD;
	process_comm(task, e->comm, direct);
	bpf_get_current_comm(e->thread, sizeof(e->thread));
	return e;
}

/* The kernel's own wakeup policy (no flag) wakes the reader only for a
 * record at the reader's position: the first after the reader had read
 * everything, which it sleeps on while idle. The records that follow while
 * it reads or pauses between batches (see source_linux.go) cost no wakeup. */
static __always_inline void submit(struct event *e)
{
	bpf_ringbuf_submit(e, 0);
}

/* Addresses, ports and namespace of a full or timewait socket (see
 * sock.h). The local port comes from the caller, which knows which of the
 * two it has. */
static __always_inline void fill_endpoints(struct event *e, struct sock_common *skc, __u16 sport, bool direct)
{
	e->family = sock_family(skc, direct);
	e->sport = sport;
	e->dport = sock_dport(skc, direct);
	e->netns = sock_netns(skc, direct);
	sock_addrs(skc, e->family, e->saddr, e->daddr, direct);
}

/* Cheap checks on the socket before reserving ring buffer space, so that
 * unwatched traffic costs a few reads and no event. */
static __always_inline bool sock_wanted(struct sock_common *skc, __u16 sport, bool direct)
{
	__u16 family = sock_family(skc, direct);
	if (!inet_family(family) || !port_wanted(sport, sock_dport(skc, direct)))
		return false;
	if (filter_family == 0)
		return true;
	__u32 saddr[4] = {}, daddr[4] = {};
	sock_addrs(skc, family, (__u8 *)saddr, (__u8 *)daddr, direct);
	return traffic_wanted(family, saddr, daddr, READ_BITFIELD(direct, skc, skc_ipv6only));
}

/* The MPTCP socket a TCP socket is a subflow of, or 0: a subflow's ULP data
 * is its MPTCP context. Kernels without MPTCP have neither type nor field. */
static __always_inline __u64 mptcp_parent(struct sock *sk, bool direct)
{
	if (!bpf_core_type_exists(struct mptcp_subflow_context) || !bpf_core_field_exists(struct tcp_sock, is_mptcp))
		return 0;
	if (!READ(direct, (struct tcp_sock *)sk, is_mptcp))
		return 0;
	/* The ULP data is a void * to the verifier: what it points to is read
	 * through the helper. */
	struct mptcp_subflow_context *ctx = READ(direct, (struct inet_connection_sock *)sk, icsk_ulp_data);
	return (__u64)BPF_CORE_READ(ctx, conn);
}

/* direct: sk is what bpf_skc_to_tcp_sock returned in a tp_btf program,
 * to be read in place (see handle_set_state). */
static __always_inline int emit_sock(__u8 kind, struct sock *sk, __u8 oldstate, __u8 newstate, bool task_wanted, bool direct)
{
	struct event *e = reserve(kind, task_wanted);
	if (!e)
		return 0;
	e->sock = (__u64)sk;
	e->proto = IPPROTO_TCP;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->parent = mptcp_parent(sk, direct);
	e->sock_cgroup_id = sock_cgroup_id(sk, direct);
	/* Why the kernel closed it, if for an error: a refused or timed-out
	 * connect, a reset. Negated, as a bind's return value. */
	if (newstate == TCP_CLOSE)
		e->err = -READ(direct, sk, sk_err);
	/* Listeners may share their ends (SO_REUSEPORT): the inode tells
	 * them apart, as sock_diag lists them. */
	if (newstate == TCP_LISTEN)
		e->inode = sock_inode(sk);
	fill_endpoints(e, (struct sock_common *)sk, sock_sport(sk, direct), direct);
	submit(e);
	return 0;
}

/* ---- Runs the kernel skips ----
 *
 * The kernel does not run a tp_btf or raw_tp program on a CPU where a run
 * of the same program is under way (a softirq interrupting it); it only
 * counts the run as missed, without saying for which socket. Each hook that
 * runs in softirqs (state changes, timers) therefore has a second program,
 * attached after the first: the kernel's guard is per program, so the
 * second runs where the first was kept from it.
 *
 * The second knows it by the kernel's own guard, the first's count of runs
 * under way on this CPU (struct bpf_prog.active), which user space locates
 * with prog_guards below: a count above zero when the second runs means a
 * run of the first was interrupted, and the kernel skipped this one. Where
 * the count cannot be located, the second knows it by the first's mark,
 * set when the first starts and cleared when it ends; but the kernel counts
 * a run as under way a little before its first instruction and after its
 * last, and the runs it skips in those moments are lost (one skip in ten in
 * storms). The first clears its mark even when it ran nested (kernels
 * without the guard run it nested, and the second then stays silent).
 */
static __always_inline struct running *running_here(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&running, &zero);
}

/* p as a number, through this CPU's struct running: every second program
 * stores the same value there, so one interrupting another on the CPU
 * does no harm. */
static __always_inline __u64 address(struct running *r, const void *p)
{
	*(volatile __u64 *)&r->through = (__u64)p;
	return *(volatile __u64 *)&r->through;
}

/* Where each hook's first program's count of runs under way lies, as an
 * offset from this CPU's struct running: both are per-CPU data, which one
 * offset locates on every CPU. Set by user space; 0 where unknown. */
__u64 first_guard_offset[RESCUED_HOOKS];

static __always_inline bool first_under_way(enum rescued_hook hook, struct running *r)
{
	__u64 offset = first_guard_offset[hook];
	int runs = 0;

	if (!offset)
		return r->first[hook];
	bpf_probe_read_kernel(&runs, sizeof(runs), (void *)(address(r, r) + offset));
	return runs > 0;
}

static __always_inline void count_rescued(void)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&rescued, &zero);
	if (count)
		(*count)++;
}

/* Defines a hook's two programs, name and name_rescue, on one section:
 * both run call, the first always, the second only for the runs the kernel
 * kept the first from. wanted is a cheap test that call would report the
 * run, which the second makes before it reads the first's count. */
#define WITH_RESCUE(sec, name, hook, wanted, call)                \
	SEC(sec)                                                  \
	int name(__u64 *ctx)                                      \
	{                                                         \
		struct running *r = running_here();               \
		if (r)                                            \
			r->first[hook] = 1;                       \
		int ret = call;                                   \
		if (r)                                            \
			r->first[hook] = 0;                       \
		return ret;                                       \
	}                                                         \
	SEC(sec)                                                  \
	int name##_rescue(__u64 *ctx)                             \
	{                                                         \
		if (!(wanted))                                    \
			return 0;                                 \
		struct running *r = running_here();               \
		if (!r || !first_under_way(hook, r))              \
			return 0;                                 \
		count_rescued();                                  \
		return call;                                      \
	}

/* One record per loaded program: its id, where its count of runs under way
 * lies (a per-CPU pointer), and where this collection's struct running
 * lies (another), whose difference user space stores in
 * first_guard_offset. */
struct prog_guard {
	__u32 id;
	__u32 unused;
	__u64 runs;
	__u64 running;
};

/* Put into the object's BTF for bpf2go, as event_type. */
const struct prog_guard *const prog_guard_type = 0;
const enum rescued_hook rescued_hook_type = HOOK_STATE;

SEC("iter/bpf_prog")
int prog_guards(struct bpf_iter__bpf_prog *ctx)
{
	struct bpf_prog *prog = ctx->prog;
	const void *map = &running;
	__u64 map_addr = 0;
	struct prog_guard g = {};

	if (!prog || !bpf_core_field_exists(prog->active))
		return 0;
	g.id = prog->aux->id;
	bpf_probe_read_kernel(&g.runs, sizeof(g.runs), &prog->active);
	/* The map's address as a number, copied from the stack: not through
	 * struct running, which a second program interrupting this one on
	 * its CPU may be using at that moment. */
	bpf_probe_read_kernel(&map_addr, sizeof(map_addr), &map);
	bpf_probe_read_kernel(&g.running, sizeof(g.running),
			      (void *)(map_addr + bpf_core_field_offset(struct bpf_array, pptrs)));
	bpf_seq_write(ctx->meta->seq, &g, sizeof(g));
	return 0;
}

/* ---- TCP state changes: sock:inet_sock_set_state or tcp_set_state ---- */

/* Whether the kernel makes this change only for a process acting on the
 * socket (connect, listen, close, shutdown), whose process the event then
 * names; the others come from softirqs. The same rule as processContext
 * in tracer/correlate, which reads the process of these alone. */
static __always_inline bool process_context(int oldstate, int newstate)
{
	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_LISTEN:
		return true;
	case TCP_CLOSE:
		return oldstate == TCP_LISTEN;
	case TCP_FIN_WAIT1:
		return oldstate == TCP_ESTABLISHED || oldstate == TCP_SYN_RECV;
	case TCP_LAST_ACK:
		return oldstate == TCP_CLOSE_WAIT;
	}
	return false;
}

static __always_inline int handle_set_state(struct sock *sk, int oldstate, int newstate, bool btf)
{
	/* The tracepoint fires for every inet protocol; raw forms also fire
	 * for no-op CLOSE->CLOSE and LISTEN->LISTEN calls. */
	if (oldstate == newstate)
		return 0;
	bool direct = btf && btf_sock_reads;
	if (direct) {
		/* NULL for a socket of another protocol. */
		sk = (struct sock *)bpf_skc_to_tcp_sock(sk);
		if (!sk)
			return 0;
	}
	if (!tcp_socket(sk, direct))
		return 0;
	if (!sock_wanted((struct sock_common *)sk, sock_sport(sk, direct), direct))
		return 0;
	return emit_sock(EVENT_STATE, sk, oldstate, newstate, process_context(oldstate, newstate), direct);
}

/* tp_btf and raw_tp both receive the tracepoint's arguments as an array of
 * u64; one body serves both, reading in place in tp_btf (read.h). */
WITH_RESCUE("tp_btf/inet_sock_set_state", state_tp_btf, HOOK_STATE, true,
	    handle_set_state((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], true))
WITH_RESCUE("raw_tp/inet_sock_set_state", state_raw_tp, HOOK_STATE, true,
	    handle_set_state((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], false))

SEC("tracepoint/sock/inet_sock_set_state")
int state_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	return handle_set_state((struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate, false);
}

/* Without the tracepoint, kprobes on the two functions that fire it:
 * inet_sk_state_store(), which tcp_set_state() ends with and listen() calls,
 * and inet_sk_set_state(), which sets the SYN_RECV of a new passive socket.
 * (A kprobe on tcp_set_state() itself would miss LISTEN and SYN_RECV.) Both
 * run before the state is stored: the old state is still in the socket. */
SEC("kprobe/inet_sk_state_store")
int BPF_KPROBE(state_store_kprobe, struct sock *sk, int newstate)
{
	return handle_set_state(sk, BPF_CORE_READ(sk, __sk_common.skc_state), newstate, false);
}

SEC("kprobe/inet_sk_set_state")
int BPF_KPROBE(state_set_kprobe, struct sock *sk, int newstate)
{
	return handle_set_state(sk, BPF_CORE_READ(sk, __sk_common.skc_state), newstate, false);
}

/* ---- accept: who really owns a passive socket ---- */

/* sk is what accept returned: a TCP socket, or from the accept syscalls an
 * MPTCP one, whose traffic (and state changes) its TCP subflow carries. */
static __always_inline int handle_accept(struct sock *sk)
{
	bool direct = cast_reads;

	if (sk && BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) == IPPROTO_MPTCP)
		sk = mptcp_first_subflow(sk);
	if (!sk)
		return 0;
	/* As a tcp_sock, as bpf_skc_to_tcp_sock gives it to the state
	 * programs: a struct sock ends before the ports. Reads through a
	 * cast pointer are guarded, whatever the socket turns out to be. */
	if (direct)
		sk = (struct sock *)CAST(struct tcp_sock, sk);
	if (!tcp_socket(sk, direct) || !sock_wanted((struct sock_common *)sk, sock_sport(sk, direct), direct))
		return 0;
	return emit_sock(EVENT_ACCEPT, sk, 0, READ(direct, sk, __sk_common.skc_state), true, direct);
}

/* Only the return value is read: the arguments changed in 6.10. It is the
 * TCP socket even for an MPTCP listener. */
SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(accept_kretprobe, struct sock *sk)
{
	return handle_accept(sk);
}

/* The socket behind a file descriptor of the current task. */
static __always_inline struct sock *sock_of_fd(long fd)
{
	struct task_struct *task = current_task(task_reads);
	struct fdtable *fdt = READ(task_reads, task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	if (cast_reads)
		return CAST(struct socket, CAST(struct file, file)->private_data)->sk;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	return BPF_CORE_READ(sock, sk);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept(sock_of_fd(ctx->ret));
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return handle_accept(sock_of_fd(ctx->ret));
}

/* ---- bind(2), TCP and UDP ----
 *
 * The exit has the result; the arguments come from the registers the task
 * entered the kernel with, which the kernel keeps until it returns
 * (bpf_task_pt_regs, 5.15+). Older kernels get them from a program on the
 * entry, by thread. An entry tracepoint costs every system call of every
 * process a call into perf while it is attached, which the storm's rate
 * shows (BENCHMARKS.md): where the registers can be read, there is none.
 */

/* Reads bind(2)'s address argument into args; false when it is not an
 * inet address. */
static __always_inline bool read_bind_addr(struct bind_args *args, const void *uaddr)
{
	__be16 port;

	if (bpf_probe_read_user(&args->family, sizeof(args->family), uaddr))
		return false;
	if (!inet_family(args->family))
		return false;
	/* sockaddr_in and sockaddr_in6 both keep the port at offset 2; the
	 * address is at 4 and 8. */
	if (bpf_probe_read_user(&port, sizeof(port), uaddr + 2))
		return false;
	args->port = bpf_ntohs(port);
	if (args->family == AF_INET)
		bpf_probe_read_user(args->addr, 4, uaddr + 4);
	else
		bpf_probe_read_user(args->addr, 16, uaddr + 8);
	return true;
}

static __always_inline int report_bind(const struct bind_args *args, long ret)
{
	/* An inet address given to another kind of socket (netlink, raw)
	 * binds no port, whatever the call returned. */
	struct sock *sk = sock_of_fd(args->fd);
	if (!sk || !holds_port(sk, false))
		return 0;
	/* A successful bind to port 0 got its port only now. */
	__u16 port = ret == 0 ? sock_sport(sk, false) : args->port;
	__u32 any[4] = {};
	if (!port_wanted(port, 0) ||
	    !traffic_wanted(args->family, (__u32 *)args->addr, any,
			    BPF_CORE_READ_BITFIELD_PROBED((struct sock_common *)sk, skc_ipv6only)))
		return 0;

	struct event *e = reserve(EVENT_BIND, true);
	if (!e)
		return 0;
	e->sock = (__u64)sk;
	e->proto = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	e->sock_cgroup_id = sock_cgroup_id(sk, false);
	e->family = args->family;
	e->sport = port;
	e->err = ret;
	e->netns = sock_netns((struct sock_common *)sk, false);
	__builtin_memcpy(e->saddr, args->addr, sizeof(e->saddr));
	submit(e);
	return 0;
}

/* The registers are read in place, by their ABI layout (kernel.h), which
 * the verifier checks against the kernel's struct pt_regs. */
SEC("tracepoint/syscalls/sys_exit_bind")
int bind_exit_regs(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	struct bind_args args = {.fd = PT_REGS_PARM1_SYSCALL(regs)};

	if (!read_bind_addr(&args, (const void *)PT_REGS_PARM2_SYSCALL(regs)))
		return 0;
	return report_bind(&args, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_bind")
int bind_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct bind_args args = {.fd = ctx->args[0]};

	if (!read_bind_addr(&args, (const void *)ctx->args[1]))
		return 0;
	__u64 tid = bpf_get_current_pid_tgid();
	bpf_map_update_elem(&binds, &tid, &args, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int bind_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct bind_args *args = bpf_map_lookup_elem(&binds, &tid);
	if (!args)
		return 0;
	report_bind(args, ctx->ret);
	bpf_map_delete_elem(&binds, &tid);
	return 0;
}

/* ---- timewait sockets, through the timer tracepoints ----
 *
 * sock:inet_sock_set_state never reports TIME_WAIT: tcp_time_wait() hands
 * the connection to a separate inet_timewait_sock and moves the full socket
 * to CLOSE. That timewait socket's life is its timer: armed when it is
 * created (and re-armed when an orphan's FIN_WAIT2 becomes TIME_WAIT),
 * stopped before it expires, is rescheduled or is killed early.
 */

static __always_inline struct inet_timewait_sock *timer_timewait(struct timer_list *timer)
{
	return (void *)timer - bpf_core_field_offset(struct inet_timewait_sock, tw_timer);
}

/* Reports a timewait socket's event. timeout_ns is the time left on its
 * timer from now. The verifier knows no type for a pointer computed from
 * its timer's: the socket is read in place only once cast (cast_reads). */
static __always_inline int emit_timewait(__u8 kind, struct inet_timewait_sock *tw, __s64 timeout_ns)
{
	bool direct = cast_reads;

	if (direct)
		tw = CAST(struct inet_timewait_sock, tw);
	__u16 sport = timewait_sport(tw, direct);
	if (!sock_wanted(&tw->__tw_common, sport, direct))
		return 0;
	struct event *e = reserve(kind, false);
	if (!e)
		return 0;
	e->sock = (__u64)tw;
	e->proto = IPPROTO_TCP;
	e->newstate = READ(direct, tw, tw_substate);
	e->timeout_ns = timeout_ns;
	fill_endpoints(e, &tw->__tw_common, sport, direct);
	submit(e);
	return 0;
}

/* btf: a tp_btf program, whose timer the verifier knows: most timers are
 * not timewait sockets', and are told apart by one read in place. */
static __always_inline bool timewait_timer(struct timer_list *timer, bool btf)
{
	return (__u64)READ(btf, timer, function) == tw_timer_handler_addr;
}

static __always_inline int handle_timer(__u8 kind, struct timer_list *timer, bool btf)
{
	if (!timewait_timer(timer, btf))
		return 0;
	/* Re-arming a timer within its wheel bucket only moves its expiry,
	 * without tracing: the expiry read at the end tells when it was. */
	long left = (long)(READ(btf, timer, expires) - bpf_jiffies64());
	return emit_timewait(kind, timer_timewait(timer), left * (long)jiffy_ns);
}

WITH_RESCUE("tp_btf/timer_start", timer_start_tp_btf, HOOK_TIMER_START,
	    timewait_timer((struct timer_list *)ctx[0], true),
	    handle_timer(EVENT_TIMEWAIT_START, (struct timer_list *)ctx[0], true))
WITH_RESCUE("tp_btf/timer_cancel", timer_cancel_tp_btf, HOOK_TIMER_CANCEL,
	    timewait_timer((struct timer_list *)ctx[0], true),
	    handle_timer(EVENT_TIMEWAIT_CANCEL, (struct timer_list *)ctx[0], true))
WITH_RESCUE("tp_btf/timer_expire_entry", timer_expire_tp_btf, HOOK_TIMER_EXPIRE,
	    timewait_timer((struct timer_list *)ctx[0], true),
	    handle_timer(EVENT_TIMEWAIT_EXPIRE, (struct timer_list *)ctx[0], true))
WITH_RESCUE("raw_tp/timer_start", timer_start_raw_tp, HOOK_TIMER_START,
	    timewait_timer((struct timer_list *)ctx[0], false),
	    handle_timer(EVENT_TIMEWAIT_START, (struct timer_list *)ctx[0], false))
WITH_RESCUE("raw_tp/timer_cancel", timer_cancel_raw_tp, HOOK_TIMER_CANCEL,
	    timewait_timer((struct timer_list *)ctx[0], false),
	    handle_timer(EVENT_TIMEWAIT_CANCEL, (struct timer_list *)ctx[0], false))
WITH_RESCUE("raw_tp/timer_expire_entry", timer_expire_raw_tp, HOOK_TIMER_EXPIRE,
	    timewait_timer((struct timer_list *)ctx[0], false),
	    handle_timer(EVENT_TIMEWAIT_EXPIRE, (struct timer_list *)ctx[0], false))

/* With kprobes, the timewait socket's own functions: every (re)scheduling,
 * including the re-arms the timer tracepoints miss, an early kill, and the
 * expiry. */
SEC("kprobe/__inet_twsk_schedule")
int BPF_KPROBE(tw_schedule_kprobe, struct inet_timewait_sock *tw, int timeo)
{
	return emit_timewait(EVENT_TIMEWAIT_START, tw, (__s64)timeo * (__s64)jiffy_ns);
}

SEC("kprobe/inet_twsk_deschedule_put")
int BPF_KPROBE(tw_deschedule_kprobe, struct inet_timewait_sock *tw)
{
	return emit_timewait(EVENT_TIMEWAIT_CANCEL, tw, 0);
}

SEC("kprobe/tw_timer_handler")
int BPF_KPROBE(tw_expire_kprobe, struct timer_list *timer)
{
	return emit_timewait(EVENT_TIMEWAIT_EXPIRE, timer_timewait(timer), 0);
}

/* ---- process exit: when a socket's owner is gone ----
 *
 * sched_process_exit fires for every thread that exits, before its files
 * are closed. do_exit() counts the group's live threads down first, so a
 * thread that finds none left is among the last of its process. Among,
 * not the last: threads exiting at once (exit_group) may all find the
 * count at 0 by the time they reach the tracepoint. The first of them to
 * claim the process in exits_reported reports its exit. Kernel threads
 * never own a socket.
 */

struct exit_key {
	__u64 start_ns;
	__u32 tgid;
	__u32 _pad;
};

/* Processes whose exit was reported; the oldest are forgotten first, long
 * after their last thread is gone. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct exit_key);
	__type(value, __u8);
} exits_reported SEC(".maps");

static __always_inline int handle_exit(void)
{
	bool direct = task_reads;
	struct task_struct *task = current_task(direct);
	if (READ(direct, task, signal, live.counter) != 0 || (READ(direct, task, flags) & PF_KTHREAD))
		return 0;
	struct exit_key key = {.start_ns = process_start_ns(task, direct), .tgid = READ(direct, task, tgid)};
	__u8 reported = 1;
	if (bpf_map_update_elem(&exits_reported, &key, &reported, BPF_NOEXIST))
		return 0;
	struct event *e = reserve(EVENT_EXIT, true);
	if (!e)
		return 0;
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int exit_tp_btf(__u64 *ctx)
{
	return handle_exit();
}

SEC("raw_tp/sched_process_exit")
int exit_raw_tp(__u64 *ctx)
{
	return handle_exit();
}

SEC("tracepoint/sched/sched_process_exit")
int exit_tracepoint(void *ctx)
{
	return handle_exit();
}
