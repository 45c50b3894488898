package linux

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// unprivilegedNote says what a report made without privileges lacks.
const unprivilegedNote = "without root, only your own processes are named: naming other users' processes needs root (or CAP_BPF and CAP_PERFMON)"

// WhoUnprivileged answers who with what the kernel gives any user: every
// socket on both sides of the port with its state, addresses, queues and
// timers (sock_diag), and the holders among the processes whose
// descriptors the caller may read (its own), found through /proc/PID/fd.
func WhoUnprivileged(port uint16, resolver *proc.Resolver) (*snapshot.PortReport, error) {
	ns, err := CurrentNamespace()
	if err != nil {
		return nil, err
	}
	r, err := Sockets(port, ns)
	if err != nil {
		return nil, err
	}
	r.Processes = map[uint32]*proc.Process{}
	byInode := make(map[uint64]int, len(r.Sockets))
	for i, s := range r.Sockets {
		if s.Inode != 0 {
			byInode[s.Inode] = i
		}
	}
	for pid, fds := range readableSocketFDs(byInode) {
		for _, fd := range fds {
			s := &r.Sockets[byInode[fd.inode]]
			s.PIDs = append(s.PIDs, pid)
			s.FDs = append(s.FDs, fd.fd)
		}
		if p, err := resolver.Resolve(pid); err == nil {
			r.Processes[pid] = &p
		}
	}
	for i := range r.Sockets {
		// A socket with an inode is open in some process: one this
		// caller may not look into.
		if s := &r.Sockets[i]; len(s.PIDs) == 0 && s.Inode != 0 {
			s.Hidden = true
		}
	}
	r.Notes = append(r.Notes, unprivilegedNote)
	return r, nil
}

type heldFD struct {
	fd    int32
	inode uint64
}

// readableSocketFDs lists, for each process whose descriptors the caller
// may read, those that are sockets among wanted (by inode).
func readableSocketFDs(wanted map[uint64]int) map[uint32][]heldFD {
	out := map[uint32][]heldFD{}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range procs {
		if !isDigits(e.Name()) {
			continue
		}
		dir := "/proc/" + e.Name() + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // another user's process
		}
		pid, _ := strconv.ParseUint(e.Name(), 10, 32)
		for _, f := range fds {
			target, err := os.Readlink(dir + f.Name())
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
			if _, ok := wanted[inode]; err != nil || !ok {
				continue
			}
			fd, _ := strconv.Atoi(f.Name())
			out[uint32(pid)] = append(out[uint32(pid)], heldFD{fd: int32(fd), inode: inode})
		}
	}
	return out
}

// IsPrivilegeError says whether err is the lack of the privileges the
// eBPF walk needs, which WhoUnprivileged works around.
func IsPrivilegeError(err error) bool { return errors.Is(err, ErrPrivileges) }
