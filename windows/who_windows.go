package windows

import (
	"github.com/porttrace/porttrace/tracer"
)

// Who answers "who owns this port?" from the TCP and UDP owner tables.
// TIME_WAIT rows carry no process on Windows: they are listed as held by
// none.
func Who(port uint16) (*tracer.PortReport, error) {
	rows, err := Snapshot()
	if err != nil {
		return nil, err
	}
	r := &tracer.PortReport{Port: port, Processes: map[uint32]*tracer.Process{}}
	for _, row := range rows {
		if row.Local.Port() != port {
			continue
		}
		s := tracer.PortSocket{Proto: row.Proto, Family: row.Family, State: row.State, Local: row.Local, Remote: row.Remote}
		if row.PID != 0 {
			s.PIDs = []uint32{row.PID}
			if _, ok := r.Processes[row.PID]; !ok {
				p := &tracer.Process{PID: row.PID}
				if exe, err := ImagePath(row.PID); err == nil {
					p.Exe, p.Comm = exe, imageBaseName(exe)
				}
				r.Processes[row.PID] = p
			}
		}
		r.Sockets = append(r.Sockets, s)
	}
	r.NameTimeWaitOwners()
	return r, nil
}
