package windows

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

// systemPID is the System process: the kernel, which holds the sockets
// kernel drivers listen on (HTTP.sys, the SMB server).
const systemPID = 4

// PortRange is a range of ports Windows excludes, as `netsh int ipv4 show
// excludedportrange` lists them: a bind inside one fails with WSAEACCES
// (10013) although nothing listens there.
type PortRange struct {
	Low, High uint16
	// Administered marks a range an administrator added (netsh int ipv4
	// add excludedportrange; netsh marks it with "*"), as opposed to one a
	// service reserved while it runs (winnat, for Hyper-V, WSL 2 and
	// Docker, takes ranges from the dynamic ports).
	Administered bool
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Low, r.High) }

func (r PortRange) contains(port uint16) bool { return r.Low <= port && port <= r.High }

// parseExcludedRanges reads the table that `netsh int ipv4 show
// excludedportrange` prints. Its title, headings and footnote are in the
// system's language; its rows are not: a start port, an end port and, for
// an administered range, "*". Anything else is skipped.
func parseExcludedRanges(out string) []PortRange {
	var ranges []PortRange
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 3 || len(f) == 3 && f[2] != "*" {
			continue
		}
		low, errLow := strconv.ParseUint(f[0], 10, 16)
		high, errHigh := strconv.ParseUint(f[1], 10, 16)
		if errLow != nil || errHigh != nil || low > high {
			continue
		}
		ranges = append(ranges, PortRange{Low: uint16(low), High: uint16(high), Administered: len(f) == 3})
	}
	return ranges
}

// netshScope is how netsh names the request's family and protocol.
func netshScope(req why.Request) (family, proto string) {
	family, proto = "ipv4", "tcp"
	if !req.Address().Unmap().Is4() {
		family = "ipv6"
	}
	if req.UDP {
		proto = "udp"
	}
	return family, proto
}

// refusalNotes explains what Windows' tables cannot show about a refused
// trial bind: an excluded port range behind WSAEACCES (ranges as netsh
// listed them, or the error that kept them from being read), a socket
// bound but not listening behind WSAEADDRINUSE.
func refusalNotes(req why.Request, report *snapshot.PortReport, trial string, ranges []PortRange, rangesErr error) []string {
	family, proto := netshScope(req)
	show := fmt.Sprintf("netsh int %s show excludedportrange protocol=%s", family, proto)
	switch trial {
	case "WSAEACCES":
		i := slices.IndexFunc(ranges, func(r PortRange) bool { return r.contains(req.Port) })
		switch {
		case rangesErr != nil:
			return []string{fmt.Sprintf("Windows refused permission (WSAEACCES, 10013); whether port %d is in an excluded port range is unknown: %v (%s lists them)", req.Port, rangesErr, show)}
		case i >= 0 && ranges[i].Administered:
			r := ranges[i]
			return []string{fmt.Sprintf("port %d is inside the excluded port range %s that an administrator added (%s marks it *): it keeps Windows' dynamic ports and other services' reservations off the range; if it is what refuses this bind, netsh int %s delete excludedportrange protocol=%s startport=%d numberofports=%d (elevated) removes it",
				req.Port, r, show, family, proto, r.Low, int(r.High)-int(r.Low)+1)}
		case i >= 0:
			return []string{fmt.Sprintf("port %d is inside the excluded port range %s (%s): Windows refuses binds there with WSAEACCES (10013) while nothing listens. A service reserved the range while it runs, most often winnat for Hyper-V, WSL 2 or Docker: from an elevated prompt, net stop winnat then net start winnat releases and renews its reservations; run netsh int %s add excludedportrange protocol=%s startport=%d numberofports=1 between the two to keep them off this port for good",
				req.Port, ranges[i], show, family, proto, req.Port)}
		case len(why.Blockers(req, report)) > 0:
			return []string{fmt.Sprintf("port %d is in no excluded port range (%s): Windows answers WSAEACCES rather than WSAEADDRINUSE when a socket on the port forbids sharing it (SO_EXCLUSIVEADDRUSE, or another user's socket against SO_REUSEADDR)", req.Port, show)}
		}
		return []string{fmt.Sprintf("Windows refused permission (WSAEACCES, 10013), and port %d is in no excluded port range (%s) and no socket in its tables explains it: a firewall or security product may forbid the bind", req.Port, show)}
	case "WSAEADDRINUSE":
		if len(why.Blockers(req, report)) > 0 {
			return nil
		}
		if req.UDP {
			return []string{"Windows refused the bind, but its UDP table shows no socket that explains it: one went away between the snapshot and the trial"}
		}
		return []string{fmt.Sprintf("Windows refused the bind, but its TCP table shows no socket that explains it: a socket bound but not listening is not in that table (Get-NetTCPConnection -State Bound -LocalPort %d shows it, with its OwningProcess), or one went away between the snapshot and the trial", req.Port)}
	}
	return nil
}

// kernelNotes says what the System process serves on the port: a kernel
// driver, on behalf of a program or service that pid 4 stands in for.
func kernelNotes(r *snapshot.PortReport) []string {
	if !slices.ContainsFunc(r.Sockets, func(s snapshot.PortSocket) bool { return r.Serves(&s) && slices.Contains(s.PIDs, systemPID) }) {
		return nil
	}
	if r.Port == 139 || r.Port == 445 {
		return []string{fmt.Sprintf("pid %d (System) is the kernel: on port %d it is the SMB file server, run by the Server service (net stop lanmanserver, elevated, stops it)", systemPID, r.Port)}
	}
	return []string{fmt.Sprintf("pid %d (System) is the kernel: on port %d it is most likely HTTP.sys, the kernel's HTTP server, listening for a program that registered URLs with it (IIS, WinRM, a .NET HttpListener); netsh http show servicestate view=requestq names that program's process and netsh http show urlacl the URL reservations: stop that program or its service, pid %d cannot be stopped",
		systemPID, r.Port, systemPID)}
}
