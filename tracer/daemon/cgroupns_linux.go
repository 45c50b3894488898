package daemon

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/proc"
)

// initialCgroupNamespace is the inode number of the kernel's first cgroup
// namespace, the host's (PROC_CGROUP_INIT_INO, fixed since Linux 4.6).
const initialCgroupNamespace = 0xEFFFFFFB

// EnterHostCgroupNamespace re-executes the daemon in the cgroup namespace
// of its nearest ancestor outside its own, when it has one of its own: a
// container that sees the host's processes (Kubernetes' hostPID, docker
// run --pid host) but not the host's cgroups (Kubernetes on cgroup v2,
// docker run --cgroupns private). There /proc/PID/cgroup writes another
// container's cgroup relative to the daemon's own ("/../<id>", the
// runtime's and the pod's parts left out), which names neither the
// container nor the pod. That ancestor is the container runtime's shim,
// which lives in the host's cgroup namespace (process 1 may be out of
// reach: init may have capabilities the daemon lacks).
//
// A cgroup namespace belongs to a thread, and exec keeps the exec'ing
// thread's: so the thread joins the ancestor's and execs the daemon again,
// with the same arguments and environment. It returns only when it did
// not re-execute: nil when there is nothing to join (the daemon's cgroup
// namespace is the host's, or it sees no process outside its own), the
// reason otherwise. Needs CAP_SYS_ADMIN (to join) and CAP_SYS_PTRACE (to
// open another user's namespace).
func EnterHostCgroupNamespace() error {
	own, err := namespaceInode("self")
	if err != nil || own == initialCgroupNamespace {
		return err
	}
	r := proc.NewResolver()
	for pid := uint32(os.Getppid()); pid != 0; {
		ns, err := namespaceInode(strconv.FormatUint(uint64(pid), 10))
		if err != nil {
			return err
		}
		if ns != own {
			return execInCgroupNamespace(pid, ns)
		}
		p, err := r.Resolve(pid)
		if err != nil {
			return fmt.Errorf("finding a process outside the cgroup namespace: %w", err)
		}
		pid = p.PPID
	}
	return nil
}

// execInCgroupNamespace re-executes the daemon in the cgroup namespace of
// process pid, whose inode is ns.
func execInCgroupNamespace(pid uint32, ns uint64) error {
	path := "/proc/" + strconv.FormatUint(uint64(pid), 10) + "/ns/cgroup"
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening the host's cgroup namespace: %w", err)
	}
	defer f.Close()
	runtime.LockOSThread()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWCGROUP); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("joining the host's cgroup namespace %s (needs CAP_SYS_ADMIN): %w", path, err)
	}
	// From here the thread stays locked: in the host's namespace, it must
	// run no other goroutine should the exec fail. Its namespace is
	// checked, so that the exec cannot loop.
	if joined, err := namespaceInode("thread-self"); err != nil || joined != ns {
		return fmt.Errorf("joining the host's cgroup namespace %s: still in cgroup:[%d] (%v)", path, joined, err)
	}
	if err := syscall.Exec("/proc/self/exe", os.Args, os.Environ()); err != nil {
		return fmt.Errorf("re-executing %s in the host's cgroup namespace: %w", os.Args[0], err)
	}
	return nil
}

// namespaceInode is the inode number, which names it, of the cgroup
// namespace of a process ("self", "thread-self" or a pid).
func namespaceInode(process string) (uint64, error) {
	var st unix.Stat_t
	path := "/proc/" + process + "/ns/cgroup"
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("reading the cgroup namespace %s: %w", path, err)
	}
	return st.Ino, nil
}
