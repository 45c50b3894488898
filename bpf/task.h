/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What both programs read from a task: the process it belongs to and that
 * process's cgroup. A process is its thread group: its pid is the group's
 * tgid, its name and start time are its leader's. A thread's own name
 * (prctl PR_SET_NAME: Java's and Chromium's named threads) is the task's
 * comm, which says which thread acted, never which program it is.
 */
#ifndef PORTTRACE_TASK_H
#define PORTTRACE_TASK_H

#include "kernel.h"
#include "read.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* The task on the CPU: one the verifier knows the type of, to read in
 * place, or a number, to read through the helper. */
static __always_inline struct task_struct *current_task(bool direct)
{
	return direct ? bpf_get_current_task_btf() : (struct task_struct *)bpf_get_current_task();
}

/* A process's start time in ns since boot (CLOCK_BOOTTIME): /proc/PID/stat's
 * field 22 counts the same in clock ticks. With the pid it names a process
 * across pid reuse. */
static __always_inline __u64 process_start_ns(struct task_struct *task, bool direct)
{
	return READ(direct, task, group_leader, start_boottime);
}

/* The process's parent: the one that forked it, or the reaper it was handed
 * to when that one exited. A short-lived child is gone by the time user
 * space could ask /proc. */
static __always_inline __u32 process_parent(struct task_struct *task, bool direct)
{
	return READ(direct, task, real_parent, tgid);
}

/* The process's name, as ps, ss and /proc/PID/comm show it. */
static __always_inline void process_comm(struct task_struct *task, char comm[16], bool direct)
{
	if (direct)
		__builtin_memcpy(comm, task->group_leader->comm, 16);
	else
		BPF_CORE_READ_STR_INTO((char(*)[16])comm, task, group_leader, comm);
}

/* The id of the task's cgroup v2 cgroup (what bpf_get_current_cgroup_id
 * returns for the current task): the inode number of its directory in the
 * cgroup2 file system. */
static __always_inline __u64 task_cgroup_id(struct task_struct *task, bool direct)
{
	return READ(direct, task, cgroups, dfl_cgrp, kn, id);
}

#endif /* PORTTRACE_TASK_H */
