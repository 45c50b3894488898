package windows

import (
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Who answers "who owns this port?" from the TCP and UDP owner tables.
// TIME_WAIT rows carry no process on Windows: they are listed as held by
// none.
func Who(port uint16) (*snapshot.PortReport, error) {
	rows, err := Snapshot()
	if err != nil {
		return nil, err
	}
	r := &snapshot.PortReport{Port: port, Processes: map[uint32]*proc.Process{}}
	for _, row := range rows {
		if row.Local.Port() != port {
			continue
		}
		s := snapshot.PortSocket{Proto: row.Proto, Family: row.Family, State: row.State, Local: row.Local, Remote: row.Remote}
		if row.PID != 0 {
			s.PIDs = []uint32{row.PID}
			if _, ok := r.Processes[row.PID]; !ok {
				p := &proc.Process{Identity: proc.Identity{PID: row.PID}}
				if exe, err := ImagePath(row.PID); err == nil {
					p.Exe, p.Name = exe, imageBaseName(exe)
				}
				r.Processes[row.PID] = p
			}
		}
		r.Sockets = append(r.Sockets, s)
	}
	return r, nil
}
