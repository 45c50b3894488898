package windows

import (
	"errors"
	"fmt"
	"slices"
	"time"
	"unsafe"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/windows/internal/winapi"
)

// processes is what Windows tells about every process at one moment: the
// Toolhelp snapshot with creation times, and the services each runs.
type processes struct {
	table    procTable
	services map[uint32][]string
	// servicesErr says why services is empty, if it is for want of an
	// answer from the service control manager.
	servicesErr error
}

func readProcesses() (*processes, error) {
	table, err := readProcTable()
	if err != nil {
		return nil, err
	}
	services, err := servicesByPID()
	return &processes{table: table, services: services, servicesErr: err}, nil
}

// describe returns the facts about process pid: from the snapshot its
// name, parents and services; from the process itself, where it may be
// opened, its image, memory and user.
func (ps *processes) describe(pid uint32) proc.Process {
	e, ok := ps.table[pid]
	if !ok {
		// Gone between the socket tables and the snapshot.
		return proc.Process{Identity: proc.Identity{PID: pid}, Exited: true}
	}
	p := proc.Process{
		Identity:  proc.Identity{PID: pid},
		Name:      e.name,
		PPID:      e.ppid, // as Windows recorded it: the creator may have exited since
		Ancestors: ps.table.ancestors(pid),
		Services:  ps.services[pid],
	}
	h, err := openToQuery(pid)
	if err != nil {
		return p
	}
	defer xwin.CloseHandle(h)
	start, err := creationTime(h)
	switch {
	case err != nil:
		return p
	case e.startNs != 0 && start != e.startNs:
		// Exited since the snapshot, its pid taken by another process.
		p.Exited = true
		return p
	}
	p.StartNs, p.StartTime = start, time.Unix(0, int64(start))
	p.Exe, _ = imagePath(h)
	p.RSSBytes = workingSet(h)
	p.User = tokenUser(h)
	return p
}

// Identify returns the Identity of the process pid names now.
func Identify(pid uint32) (proc.Identity, error) {
	h, err := openToQuery(pid)
	if errors.Is(err, xwin.ERROR_INVALID_PARAMETER) {
		return proc.Identity{}, fmt.Errorf("pid %d: %w", pid, proc.ErrExited)
	} else if err != nil {
		return proc.Identity{}, err
	}
	defer xwin.CloseHandle(h)
	start, err := creationTime(h)
	if err != nil {
		return proc.Identity{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return proc.Identity{PID: pid, StartNs: start}, nil
}

// creationTime is when process h was created, in nanoseconds since the
// Unix epoch.
func creationTime(h xwin.Handle) (uint64, error) {
	var created, exited, kernel, user xwin.Filetime
	if err := xwin.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0, fmt.Errorf("reading the creation time: %w", err)
	}
	return uint64(created.Nanoseconds()), nil
}

// workingSet is the memory of process h resident now (its working set),
// 0 where Windows does not say.
func workingSet(h xwin.Handle) uint64 {
	var c winapi.ProcessMemoryCounters
	if err := winapi.GetProcessMemoryInfo(h, &c, uint32(unsafe.Sizeof(c))); err != nil {
		return 0
	}
	return uint64(c.WorkingSetSize)
}

// tokenUser names the account process h runs as (DOMAIN\user), the SID
// where the account has no name, "" where the token may not be read.
func tokenUser(h xwin.Handle) string {
	var token xwin.Token
	if err := xwin.OpenProcessToken(h, xwin.TOKEN_QUERY, &token); err != nil {
		return ""
	}
	defer token.Close()
	u, err := token.GetTokenUser()
	if err != nil {
		return ""
	}
	account, domain, _, err := u.User.Sid.LookupAccount("")
	switch {
	case err != nil:
		return u.User.Sid.String()
	case domain != "":
		return domain + `\` + account
	}
	return account
}

// readProcTable takes a Toolhelp snapshot of the processes and reads the
// creation time of each that may be opened.
func readProcTable() (procTable, error) {
	snap, err := xwin.CreateToolhelp32Snapshot(xwin.TH32CS_SNAPPROCESS, 0)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	defer xwin.CloseHandle(snap)
	t := procTable{}
	e := xwin.ProcessEntry32{Size: uint32(unsafe.Sizeof(xwin.ProcessEntry32{}))}
	for err = xwin.Process32First(snap, &e); err == nil; err = xwin.Process32Next(snap, &e) {
		entry := procEntry{pid: e.ProcessID, ppid: e.ParentProcessID, name: xwin.UTF16ToString(e.ExeFile[:])}
		if h, err := openToQuery(e.ProcessID); err == nil {
			entry.startNs, _ = creationTime(h)
			xwin.CloseHandle(h)
		}
		t[entry.pid] = entry
	}
	if !errors.Is(err, xwin.ERROR_NO_MORE_FILES) {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	return t, nil
}

// servicesByPID names the running services of each process, from the
// service control manager (which any user may ask).
func servicesByPID() (map[uint32][]string, error) {
	scm, err := xwin.OpenSCManager(nil, nil, xwin.SC_MANAGER_ENUMERATE_SERVICE)
	if err != nil {
		return nil, fmt.Errorf("opening the service control manager: %w", err)
	}
	defer xwin.CloseServiceHandle(scm)
	out := map[uint32][]string{}
	var buf []byte
	var resume uint32
	for {
		var need, n uint32
		var p *byte
		if len(buf) > 0 {
			p = &buf[0]
		}
		err := xwin.EnumServicesStatusEx(scm, xwin.SC_ENUM_PROCESS_INFO, xwin.SERVICE_WIN32, xwin.SERVICE_ACTIVE,
			p, uint32(len(buf)), &need, &n, &resume, nil)
		if n > 0 {
			for _, s := range unsafe.Slice((*xwin.ENUM_SERVICE_STATUS_PROCESS)(unsafe.Pointer(p)), n) {
				if pid := s.ServiceStatusProcess.ProcessId; pid != 0 {
					out[pid] = append(out[pid], xwin.UTF16PtrToString(s.ServiceName))
				}
			}
		}
		switch {
		case err == nil:
			for _, names := range out {
				slices.Sort(names)
			}
			return out, nil
		case !errors.Is(err, xwin.ERROR_MORE_DATA):
			return nil, fmt.Errorf("listing services: %w", err)
		case n == 0 && need <= uint32(len(buf)):
			return nil, fmt.Errorf("listing services: no room in %d bytes, yet %d asked for", len(buf), need)
		case n == 0:
			// Room for what is left, and for services started meanwhile.
			buf = make([]byte, need+need/8)
		}
	}
}
