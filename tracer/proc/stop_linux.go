package proc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Outcome says how Stop ended.
type Outcome uint8

const (
	// Gone: the process had exited before Stop could signal it. If its pid
	// names another process now, that one was left alone.
	Gone Outcome = iota + 1
	// Terminated: the process exited after SIGTERM.
	Terminated
	// Killed: the process was still running when the timeout after
	// SIGTERM ran out, and exited after SIGKILL.
	Killed
)

func (o Outcome) String() string {
	switch o {
	case Gone:
		return "already gone"
	case Terminated:
		return "terminated by SIGTERM"
	case Killed:
		return "killed by SIGKILL"
	}
	return "unknown"
}

const (
	// killWait bounds the wait for an exit after SIGKILL: a process stuck
	// in the kernel (uninterruptible sleep, state D) may never exit.
	killWait = 5 * time.Second
	// pollSlice is how long a wait blocks before it looks at its context
	// again.
	pollSlice = 100 * time.Millisecond
)

// Stop ends the process target: SIGTERM, then SIGKILL if it still runs
// after timeout. It signals through a pidfd taken on the process only once
// its start time proved it is target, so that it never signals a process
// that took target's pid. It fails where it may not signal the process
// (errors.Is(err, os.ErrPermission)) and on kernels older than Linux 5.3,
// which have no pidfds: it never signals a bare pid.
func Stop(ctx context.Context, target Identity, timeout time.Duration) (Outcome, error) {
	fd, err := unix.PidfdOpen(int(target.PID), 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return Gone, nil
	case errors.Is(err, unix.ENOSYS):
		return 0, fmt.Errorf("stop pid %d: pidfd_open: %w (Linux 5.3 or later is needed: porttrace does not signal a bare pid, which another process may have taken)", target.PID, err)
	case err != nil:
		return 0, fmt.Errorf("stop pid %d: pidfd_open: %w", target.PID, err)
	}
	defer unix.Close(fd)
	// The pidfd holds whichever process had the pid when it was opened;
	// if that is target, it started when target did. From here on the pid
	// cannot change hands under the pidfd.
	now, err := Identify(target.PID)
	switch {
	case errors.Is(err, ErrExited):
		return Gone, nil
	case err != nil:
		return 0, fmt.Errorf("stop pid %d: %w", target.PID, err)
	case !now.Same(target):
		return Gone, nil
	}
	exitedBefore := Gone // the outcome if it exits before the next signal
	for _, step := range []struct {
		sig     unix.Signal
		wait    time.Duration
		outcome Outcome
	}{{unix.SIGTERM, timeout, Terminated}, {unix.SIGKILL, killWait, Killed}} {
		err := signal(fd, target.PID, step.sig)
		if errors.Is(err, unix.ESRCH) {
			return exitedBefore, nil
		} else if err != nil {
			return 0, err
		}
		exited, err := waitExit(ctx, fd, step.wait)
		if err != nil {
			return 0, fmt.Errorf("stop pid %d: %s sent: %w", target.PID, unix.SignalName(step.sig), err)
		} else if exited {
			return step.outcome, nil
		}
		exitedBefore = step.outcome
	}
	return 0, fmt.Errorf("stop pid %d: still running %v after SIGKILL: stuck in the kernel (state D in ps)?", target.PID, killWait)
}

func signal(pidfd int, pid uint32, sig unix.Signal) error {
	err := unix.PidfdSendSignal(pidfd, sig, nil, 0)
	switch {
	case err == nil, errors.Is(err, unix.ESRCH):
		return err
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("stop pid %d: %s: %w (run porttrace as root, or as the process's user)", pid, unix.SignalName(sig), err)
	}
	return fmt.Errorf("stop pid %d: %s: %w", pid, unix.SignalName(sig), err)
}

// waitExit waits up to d for the process behind pidfd to exit, which
// makes the pidfd readable (a zombie counts: it has exited).
func waitExit(ctx context.Context, pidfd int, d time.Duration) (bool, error) {
	deadline := time.Now().Add(d)
	for {
		wait := max(min(time.Until(deadline), pollSlice), 0)
		ms := int((wait + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, ms)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return false, fmt.Errorf("wait for exit: poll pidfd: %w", err)
		case n > 0:
			return true, nil
		case ctx.Err() != nil:
			return false, fmt.Errorf("wait for exit: %w", ctx.Err())
		case !time.Now().Before(deadline):
			return false, nil
		}
	}
}
