// Package proc holds the facts an operator acts on about a process: what it
// is, who started it, what would restart it, and how to stop it without
// hitting another process that took its pid.
//
// A process is an Identity, its pid and its start time: a pid alone may
// name a different program a moment later.
//
//	id, err := proc.Identify(pid)          // the process pid names now
//	r := proc.NewResolver()                // one per program; safe for concurrent use
//	p, err := r.Resolve(pid)               // facts about the process pid names now
//	p, err = r.Lookup(id)                  // facts about that process, even if it exited since
//	c, ok := r.CgroupByID(cgroupID)        // name the cgroup an eBPF event carries
//	kids, err := proc.Descendants(id)      // its children, theirs, and so on
//	out, err := proc.Stop(ctx, id, 5*time.Second) // SIGTERM, then SIGKILL
//
// The Resolver reads /proc once per process lifetime for the facts that do
// not change (command line, executable, user, cgroup, container, unit) and
// keeps them by Identity. Every call still reads /proc/PID/stat once: that
// read says whether the pid still names the process, and brings the name,
// the parent (the ancestors are walked again only when it changed) and the
// resident memory fresh, which is why RSS is never cached. It is called
// when a process needs naming (who, why, free, a new owner in the daemon),
// never per event.
//
// A Resolver owns its cache alone; callers get copies, so one Resolver
// serves many goroutines without sharing state with any of them.
//
// The types and ParseCgroupPath (which names the systemd unit, container
// and Kubernetes pod from a cgroup path alone) are platform-neutral; the
// rest reads Linux's /proc and signals through pidfds.
//
// Names and command lines are chosen by the processes themselves: print
// them through tracer.Printable (CmdlineText does).
package proc

import (
	"errors"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
)

// userHZ is the unit of the start time in /proc/PID/stat (clock ticks,
// sysconf(_SC_CLK_TCK)). The kernel fixes it at 100 on every architecture
// Go supports (USER_HZ; the auxiliary vector's AT_CLKTCK, which glibc's
// sysconf returns, says so: a test checks it).
const userHZ = 100

// tickNs is one clock tick in nanoseconds: the precision of /proc's start
// times.
const tickNs = 1e9 / userHZ

// ErrExited says that a pid no longer names the process asked about: it
// exited, or its pid was taken by another process since.
var ErrExited = errors.New("process exited")

// Identity is one process, told apart from any process that takes its pid
// later.
type Identity struct {
	PID uint32 `json:"pid"`
	// StartNs is when the process started, in nanoseconds since boot on
	// CLOCK_BOOTTIME (which counts time suspended): the kernel's
	// task->start_boottime of the thread group leader, which
	// /proc/PID/stat's field 22 shows rounded down to a clock tick (10 ms).
	// eBPF programs must read start_boottime (real_start_time before Linux
	// 5.5), not task->start_time: that one is CLOCK_MONOTONIC and falls
	// behind by every second the machine slept. On Windows it is the
	// creation time (GetProcessTimes) in nanoseconds since the Unix epoch.
	StartNs uint64 `json:"start_ns"`
}

// Same reports whether id and other are the same process: the same pid,
// started in the same clock tick, so that an exact start time from the
// kernel matches /proc's rounded one. (A pid reused within 10 ms would
// take pid_max forks in that time.)
func (id Identity) Same(other Identity) bool {
	return id.PID == other.PID && id.StartNs/tickNs == other.StartNs/tickNs
}

// Key is the Identity at /proc's precision, for use as a map key: the
// Keys of two Identities are equal when they are the Same process.
func (id Identity) Key() Identity {
	return Identity{PID: id.PID, StartNs: id.StartNs / tickNs * tickNs}
}

// Ancestor is one process up a process's chain of parents.
type Ancestor struct {
	PID  uint32 `json:"pid"`
	Name string `json:"name"`
}

// Process is what an operator acts on about one process.
type Process struct {
	Identity
	// Name is the command name of the thread group leader (/proc/PID/comm,
	// at most 15 bytes), as the kernel and ps show it.
	Name string `json:"name"`
	PPID uint32 `json:"ppid"`
	// Ancestors are the parent, its parent and so on, up to and including
	// pid 1 (the service manager) or the init of a pid namespace (a
	// container's first process), whichever comes first.
	Ancestors []Ancestor `json:"ancestors"`
	// UID is the real user id; User its name, or the number where the
	// password database has no name for it.
	UID  uint32 `json:"uid"`
	User string `json:"user"`
	// RSSBytes is the resident memory at the last Resolve or Lookup.
	RSSBytes uint64 `json:"rss_bytes"`
	// StartTime is StartNs on the wall clock.
	StartTime time.Time `json:"start_time"`
	// Exe is where the executable was (/proc/PID/exe), empty where that is
	// not readable (another user's process without privileges, a kernel
	// thread). A binary replaced since the start ends in " (deleted)".
	Exe string `json:"exe,omitempty"`
	// Cmdline is the command line, arguments joined by spaces as ps shows
	// them, at most maxCmdline bytes.
	Cmdline string `json:"cmdline,omitempty"`
	// Cgroup says what runs the process: the cgroup, the systemd unit, the
	// container.
	Cgroup
	// Services are the Windows services the process runs (a shared
	// svchost runs several), which the service control manager may start
	// again; empty elsewhere.
	Services []string `json:"services,omitempty"`
	// Exited says the process is gone: the rest is what was known of it.
	Exited bool `json:"exited,omitempty"`
}

// Age is how long the process has been running at now.
func (p *Process) Age(now time.Time) time.Duration {
	return now.Sub(p.StartTime)
}

// CmdlineText is the command line for a terminal: at most max characters
// of it, "…" where it was cut, every control escaped.
func (p *Process) CmdlineText(max int) string {
	s := p.Cmdline
	for i := range s { // i steps over runes, and over bad bytes one by one
		if max <= 0 {
			s = s[:i] + "…"
			break
		}
		max--
	}
	return tracer.Printable(s)
}

// Manager says what would start the process again if it stopped (a systemd
// unit, a container runtime, the kubelet) and the command that stops that
// instead; both empty where nothing would.
func (p *Process) Manager() (what, stop string) {
	short := func(id string) string { return id[:min(12, len(id))] }
	switch {
	case p.Container != nil && p.Container.PodUID != "":
		return "Kubernetes pod " + p.Container.PodUID + ", container " + short(p.Container.ID), "kubectl delete or scale the pod"
	case p.Container != nil && p.Container.Runtime != "":
		return p.Container.Runtime + " container " + short(p.Container.ID), p.Container.Runtime + " stop " + short(p.Container.ID)
	case p.Container != nil:
		return "container " + short(p.Container.ID), "stop the container " + short(p.Container.ID)
	case p.Unit != "" && p.UserManager != "":
		return "systemd user unit " + p.Unit, "systemctl --user stop " + p.Unit
	case strings.HasSuffix(p.Unit, ".service"):
		return "systemd unit " + p.Unit, "systemctl stop " + p.Unit
	case len(p.Services) == 1:
		return "Windows service " + p.Services[0], "sc stop " + p.Services[0]
	case len(p.Services) > 1:
		stops := make([]string, len(p.Services))
		for i, s := range p.Services {
			stops[i] = "sc stop " + s
		}
		return "Windows services " + strings.Join(p.Services, ", "), strings.Join(stops, ", ")
	}
	return "", ""
}
