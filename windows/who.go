package windows

import "github.com/porttrace/porttrace/tracer/snapshot"

// portSockets lists the rows on port, both sides of it: those whose local
// end is the port (what serves on it, and the connections it accepted) and
// those whose remote end is (connections to it from this host). A row with
// pid 0 (TIME_WAIT, or a table that does not say) is held by no process.
// Port 0 is every port, as on Linux: every row.
func portSockets(rows []Row, port uint16) []snapshot.PortSocket {
	var out []snapshot.PortSocket
	for _, row := range rows {
		if port != 0 && row.Local.Port() != port && row.Remote.Port() != port {
			continue
		}
		s := snapshot.PortSocket{Proto: row.Proto, Family: row.Family, State: row.State, Local: row.Local, Remote: row.Remote}
		if row.PID != 0 {
			s.PIDs = []uint32{row.PID}
		}
		out = append(out, s)
	}
	return out
}
