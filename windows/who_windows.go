package windows

import (
	"fmt"

	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// Who answers "who owns this port?" from the TCP and UDP owner tables:
// both sides of the port, what serves on it and what connects to it from
// this host, and the facts about each process that holds a socket there.
// The tables say nothing of descriptors (FDs stay empty). TIME_WAIT rows
// carry no process on Windows: they are listed as held by none.
func Who(port uint16) (*snapshot.PortReport, error) {
	rows, err := Snapshot()
	if err != nil {
		return nil, err
	}
	r := &snapshot.PortReport{Port: port, Sockets: portSockets(rows, port), Processes: map[uint32]*proc.Process{}}
	if pids := r.PIDs(); len(pids) > 0 {
		ps, err := readProcesses()
		if err != nil {
			return nil, err
		}
		for _, pid := range pids {
			p := ps.describe(pid)
			r.Processes[pid] = &p
		}
		if ps.servicesErr != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("the services the processes run are not named: %v", ps.servicesErr))
		}
	}
	r.Notes = append(r.Notes, kernelNotes(r)...)
	r.MarkRoles(dynamicPorts)
	return r, nil
}

// dynamicPorts is Windows' dynamic port range since Vista, which connects
// take their local port from (netsh int ipv4 show dynamicport tcp): where
// an administrator moved it, client ends outside it are left unknown.
var dynamicPorts = snapshot.PortRange{Low: 49152, High: 65535}
