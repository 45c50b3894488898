package free

import (
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
)

// TestMakeTargetsTopmostHolders: a master and its workers hold the
// listener: only the master is a target; an unrelated holder of the same
// port (a SO_REUSEPORT peer) is one too; clients connected to the port and
// TIME_WAIT sockets are not processes to stop.
func TestMakeTargetsTopmostHolders(t *testing.T) {
	p := func(pid uint32, parents ...uint32) *proc.Process {
		pr := &proc.Process{Identity: proc.Identity{PID: pid}, Name: "p"}
		for _, a := range parents {
			pr.Ancestors = append(pr.Ancestors, proc.Ancestor{PID: a})
		}
		return pr
	}
	sock := func(state tracer.State, local, remote string, pids ...uint32) snapshot.PortSocket {
		return snapshot.PortSocket{Proto: tracer.ProtoTCP, State: state, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote), PIDs: pids}
	}
	r := &snapshot.PortReport{
		Port: 80,
		Sockets: []snapshot.PortSocket{
			sock(tracer.StateListen, "0.0.0.0:80", "0.0.0.0:0", 700, 701, 702),
			sock(tracer.StateListen, "0.0.0.0:80", "0.0.0.0:0", 900),
			sock(tracer.StateEstablished, "127.0.0.1:40000", "127.0.0.1:80", 5000),
			sock(tracer.StateTimeWait, "127.0.0.1:80", "127.0.0.1:40001"),
		},
		Processes: map[uint32]*proc.Process{700: p(700, 1), 701: p(701, 700, 1), 702: p(702, 700, 1), 900: p(900, 1), 5000: p(5000, 1)},
	}
	plan := Make(r)
	var targets, holders []uint32
	for _, t := range plan.Targets {
		targets = append(targets, t.PID)
	}
	for _, h := range plan.Holders {
		holders = append(holders, h.PID)
	}
	if len(targets) != 2 || targets[0] != 700 || targets[1] != 900 {
		t.Errorf("targets %v, want [700 900]", targets)
	}
	if len(holders) != 4 {
		t.Errorf("holders %v, want the four serving processes", holders)
	}
	if plan.TimeWait != 1 {
		t.Errorf("TIME_WAIT %d, want 1", plan.TimeWait)
	}
}
