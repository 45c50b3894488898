package windows

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer/proc"
)

// Outcome says how Stop ended.
type Outcome uint8

const (
	// Gone: the process had exited before Stop could end it. If its pid
	// names another process now, that one was left alone.
	Gone Outcome = iota + 1
	// Terminated: TerminateProcess ended the process.
	Terminated
)

func (o Outcome) String() string {
	switch o {
	case Gone:
		return "already gone"
	case Terminated:
		return "terminated (TerminateProcess)"
	}
	return "unknown"
}

const (
	// terminatedExitCode is the exit status a terminated process gets, as
	// taskkill /F gives it.
	terminatedExitCode = 1
	// waitSlice is how long a wait blocks before it looks at its context
	// again.
	waitSlice = 100 * time.Millisecond
)

// Stop ends the process target with TerminateProcess and waits up to
// timeout for it to exit. Windows has no SIGTERM: a console or service
// process cannot be asked to exit from outside, only ended, without a
// chance to clean up (as taskkill /F does). Stop terminates through a
// handle opened on the process only once its creation time proved it is
// target: the handle keeps the pid from passing to another process, so
// that a process that took target's pid is never terminated. The System
// process (pid 4), which holds what kernel drivers listen on, is refused.
func Stop(ctx context.Context, target proc.Identity, timeout time.Duration) (Outcome, error) {
	if target.PID == 0 || target.PID == systemPID {
		return 0, fmt.Errorf("stop pid %d: it is the kernel, which cannot be stopped: stop the program or service it listens for (porttrace who names it where it can)", target.PID)
	}
	h, err := xwin.OpenProcess(xwin.PROCESS_TERMINATE|xwin.PROCESS_QUERY_LIMITED_INFORMATION|xwin.SYNCHRONIZE, false, target.PID)
	switch {
	case errors.Is(err, xwin.ERROR_INVALID_PARAMETER): // no process has the pid
		return Gone, nil
	case errors.Is(err, xwin.ERROR_ACCESS_DENIED):
		return 0, fmt.Errorf("stop pid %d: opening it: %w (run porttrace from an elevated prompt)", target.PID, err)
	case err != nil:
		return 0, fmt.Errorf("stop pid %d: opening it: %w", target.PID, err)
	}
	defer xwin.CloseHandle(h)
	start, err := creationTime(h)
	if err != nil {
		return 0, fmt.Errorf("stop pid %d: %w", target.PID, err)
	}
	if !(proc.Identity{PID: target.PID, StartNs: start}).Same(target) {
		return Gone, nil
	}
	// A handle may outlive its process: one that exited is gone.
	if exited, err := waitExit(ctx, h, 0); err != nil {
		return 0, fmt.Errorf("stop pid %d: %w", target.PID, err)
	} else if exited {
		return Gone, nil
	}
	if err := xwin.TerminateProcess(h, terminatedExitCode); err != nil {
		// Denied as well to a process already on its way out.
		if exited, _ := waitExit(ctx, h, 0); exited {
			return Gone, nil
		}
		return 0, fmt.Errorf("stop pid %d: TerminateProcess: %w", target.PID, err)
	}
	exited, err := waitExit(ctx, h, timeout)
	switch {
	case err != nil:
		return 0, fmt.Errorf("stop pid %d: terminated: %w", target.PID, err)
	case !exited:
		return 0, fmt.Errorf("stop pid %d: terminated, but still running after %v: stuck in a driver?", target.PID, timeout)
	}
	return Terminated, nil
}

// waitExit waits up to d for process h to exit, which signals its handle.
func waitExit(ctx context.Context, h xwin.Handle, d time.Duration) (bool, error) {
	deadline := time.Now().Add(d)
	for {
		wait := max(min(time.Until(deadline), waitSlice), 0)
		event, err := xwin.WaitForSingleObject(h, uint32((wait+time.Millisecond-1)/time.Millisecond))
		switch {
		case err != nil:
			return false, fmt.Errorf("wait for exit: %w", err)
		case event == xwin.WAIT_OBJECT_0:
			return true, nil
		case ctx.Err() != nil:
			return false, fmt.Errorf("wait for exit: %w", ctx.Err())
		case !time.Now().Before(deadline):
			return false, nil
		}
	}
}

// Descendants lists the processes below root, each before its children:
// the order in which to stop a tree (free --tree, taskkill /T), parents
// first, so that no parent replaces a child stopped before it. Windows
// keeps no tree, only each process's creator's pid: a child counts where
// it was created after its parent, so that a process that took the pid of
// a dead parent's child is not taken for it. The list is a moment's view,
// of Identities, so that Stop leaves alone any pid that changes hands
// since. Children that cannot be opened are left out (they cannot be told
// apart from such a newcomer), named in the error, which comes with the
// rest of the list.
func Descendants(root proc.Identity) ([]proc.Identity, error) {
	t, err := readProcTable()
	if err != nil {
		return nil, err
	}
	if e, ok := t[root.PID]; !ok || !(proc.Identity{PID: e.pid, StartNs: e.startNs}).Same(root) {
		return nil, fmt.Errorf("pid %d: %w", root.PID, proc.ErrExited)
	}
	ids, unknown := t.descendants(root)
	if len(unknown) > 0 {
		return ids, fmt.Errorf("processes below pid %d left alone: %v cannot be opened to read their creation times (run porttrace from an elevated prompt)", root.PID, unknown)
	}
	return ids, nil
}

// Parent is the process that created id, where it still runs: Windows
// keeps only the creator's pid, so a process of that pid created after id
// is a newcomer that took a dead creator's pid, and ErrExited says the
// creator is gone. id.StartNs 0 takes whatever process pid names now.
func Parent(id proc.Identity) (proc.Identity, error) {
	h, err := openToQuery(id.PID)
	if err != nil {
		return proc.Identity{}, err
	}
	defer xwin.CloseHandle(h)
	start, err := creationTime(h)
	if err != nil {
		return proc.Identity{}, err
	}
	if id.StartNs != 0 && !(proc.Identity{PID: id.PID, StartNs: start}).Same(id) {
		return proc.Identity{}, fmt.Errorf("pid %d: %w", id.PID, proc.ErrExited)
	}
	var info xwin.PROCESS_BASIC_INFORMATION
	if err := xwin.NtQueryInformationProcess(h, xwin.ProcessBasicInformation, unsafe.Pointer(&info), uint32(unsafe.Sizeof(info)), nil); err != nil {
		return proc.Identity{}, fmt.Errorf("reading the creator of process %d: %w", id.PID, err)
	}
	parent, err := Identify(uint32(info.InheritedFromUniqueProcessId))
	if err != nil {
		return proc.Identity{}, err
	}
	if parent.StartNs > start {
		return proc.Identity{}, fmt.Errorf("creator of pid %d: %w", id.PID, proc.ErrExited)
	}
	return parent, nil
}
