package windows

import (
	"errors"
	"fmt"

	xwin "golang.org/x/sys/windows"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/windows/internal/winapi"
)

// tableReadAttempts bounds the retries when the table outgrows the buffer
// sized for it between two calls.
const tableReadAttempts = 4

var snapshotTables = [...]struct {
	proto  tracer.Proto
	family tracer.Family
}{
	{tracer.ProtoTCP, tracer.FamilyIPv4},
	{tracer.ProtoTCP, tracer.FamilyIPv6},
	{tracer.ProtoUDP, tracer.FamilyIPv4},
	{tracer.ProtoUDP, tracer.FamilyIPv6},
}

// Snapshot lists the TCP and UDP sockets of both address families, with
// the process that owns each.
func Snapshot() ([]Row, error) {
	var rows []Row
	var buf []byte
	for _, t := range snapshotTables {
		var err error
		buf, err = readTable(buf, t.proto, t.family)
		if err == nil {
			rows, err = decodeTable(buf, t.proto, t.family, rows)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %v %v socket table: %w", t.family, t.proto, err)
		}
	}
	return rows, nil
}

// readTable fills buf, grown as needed, with the owner-pid table of proto
// and family.
func readTable(buf []byte, proto tracer.Proto, family tracer.Family) ([]byte, error) {
	af := uint32(xwin.AF_INET)
	if family == tracer.FamilyIPv6 {
		af = xwin.AF_INET6
	}
	get, class := winapi.GetExtendedTcpTable, uint32(winapi.TCPTableOwnerPIDAll)
	if proto == tracer.ProtoUDP {
		get, class = winapi.GetExtendedUdpTable, winapi.UDPTableOwnerPID
	}
	for range tableReadAttempts {
		size := uint32(len(buf))
		var p *byte
		if size > 0 {
			p = &buf[0]
		}
		err := get(p, &size, false, af, class, 0)
		if !errors.Is(err, xwin.ERROR_INSUFFICIENT_BUFFER) {
			return buf, err
		}
		// Room for a few more rows in case sockets open meanwhile.
		buf = make([]byte, size+size/8)
	}
	return nil, xwin.ERROR_INSUFFICIENT_BUFFER
}
