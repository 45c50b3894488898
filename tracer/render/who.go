package render

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

// WhoOptions shape who's text.
type WhoOptions struct {
	// All lists every socket on its own line instead of counting
	// connections and grouping the sockets no process holds.
	All bool
	// Now is the time ages are counted to.
	Now time.Time
}

// WhoText writes the report for a person: a headline that answers the
// question (and, for a free port, whether a bind would still fail), then
// what serves on the port and what on this host connects to it, each
// process with the facts an operator acts on and the sockets it holds;
// then the sockets no process holds, grouped.
func WhoText(w io.Writer, r *snapshot.PortReport, opts WhoOptions) {
	fmt.Fprintln(w, headline(r))
	// One pass over the sockets: a busy port has tens of thousands.
	serves := map[uint32]bool{}
	for i := range r.Sockets {
		if s := &r.Sockets[i]; r.Serves(s) {
			for _, pid := range s.PIDs {
				serves[pid] = true
			}
		}
	}
	var serving, connecting []uint32
	for _, pid := range r.PIDs() {
		if serves[pid] {
			serving = append(serving, pid)
		} else {
			connecting = append(connecting, pid)
		}
	}
	peers := &peerIndex{r: r}
	if len(serving) > 0 {
		title := "SERVES ON %d"
		if sideAll(r, true, tracer.RoleClient) {
			// A client's port (an ephemeral one): its connections.
			title = "CONNECTS FROM %d"
		}
		fmt.Fprintf(w, "\n"+title+"\n", r.Port)
		for _, pid := range serving {
			writeProcess(w, r, pid, true, peers, opts)
		}
	}
	if len(connecting) > 0 {
		title := "CONNECTS TO %d (from this host)"
		if sideAll(r, false, tracer.RoleServer) {
			title = "SERVES CONNECTIONS FROM %d (on this host)"
		}
		fmt.Fprintf(w, "\n"+title+"\n", r.Port)
		for _, pid := range connecting {
			writeProcess(w, r, pid, false, peers, opts)
		}
	}
	if uids := hiddenUIDs(r); len(uids) > 0 {
		fmt.Fprintf(w, "\nHELD BY PROCESSES YOU MAY NOT SEE (naming them needs root)\n")
		for i := range r.Sockets {
			if s := &r.Sockets[i]; s.Hidden {
				fmt.Fprintf(w, "  uid %-5d %s\n", s.UID, socketLine(r, s, peers))
			}
		}
	}
	writeUnheld(w, r, opts)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
}

// sideAll says whether every held socket on one side of the port (serving:
// its local end is the port) is known to be the role's end of its
// connection.
func sideAll(r *snapshot.PortReport, serving bool, role tracer.Role) bool {
	any := false
	for i := range r.Sockets {
		if s := &r.Sockets[i]; s.Held() && r.Serves(s) == serving {
			if s.Role != role {
				return false
			}
			any = true
		}
	}
	return any
}

// headline is who's answer in one line; for a free port it says whether
// sockets no process holds would still make a bind fail.
func headline(r *snapshot.PortReport) string {
	var holders []string
	for _, pid := range r.PIDs() {
		if slices.ContainsFunc(r.Sockets, func(s snapshot.PortSocket) bool { return slices.Contains(s.PIDs, pid) && r.Serves(&s) }) {
			holders = append(holders, processLabel(r, pid))
		}
	}
	for _, uid := range hiddenUIDs(r) {
		holders = append(holders, fmt.Sprintf("a process of uid %d (naming it needs root)", uid))
	}
	switch {
	case len(holders) == 1:
		return fmt.Sprintf("port %d: held by %s", r.Port, holders[0])
	case len(holders) > 1:
		return fmt.Sprintf("port %d: held by %d processes: %s", r.Port, len(holders), strings.Join(holders, ", "))
	}
	blockers := why.Blockers(why.Request{Port: r.Port}, r)
	if len(blockers) == 0 {
		return fmt.Sprintf("port %d: no process holds it", r.Port)
	}
	counts := map[tracer.State]int{}
	var states []tracer.State
	for _, b := range blockers {
		if counts[b.Socket.State] == 0 {
			states = append(states, b.Socket.State)
		}
		counts[b.Socket.State]++
	}
	slices.Sort(states)
	var parts []string
	for _, st := range states {
		parts = append(parts, fmt.Sprintf("%s %s", count(counts[st]), st))
	}
	noun := "sockets block"
	if len(blockers) == 1 {
		noun = "socket blocks"
	}
	return fmt.Sprintf("port %d: no process holds it, but %s %s bind(0.0.0.0:%d) without SO_REUSEADDR; see porttrace why %d",
		r.Port, strings.Join(parts, ", "), noun, r.Port, r.Port)
}

// hiddenUIDs lists the users whose processes hold sockets serving on the
// port that the caller may not see.
func hiddenUIDs(r *snapshot.PortReport) []uint32 {
	var uids []uint32
	for i := range r.Sockets {
		if s := &r.Sockets[i]; s.Hidden && r.Serves(s) && !slices.Contains(uids, s.UID) {
			uids = append(uids, s.UID)
		}
	}
	return uids
}

// count writes n with thousands separators: 12,533 TIME_WAIT sockets.
func count(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func processLabel(r *snapshot.PortReport, pid uint32) string {
	p := r.Processes[pid]
	if p == nil {
		return fmt.Sprintf("pid %d", pid)
	}
	label := fmt.Sprintf("%s %d", tracer.Printable(p.Name), pid)
	switch {
	case p.Container != nil:
		label += fmt.Sprintf(" (container %s)", shortID(p.Container.ID))
	case p.Unit != "":
		label += fmt.Sprintf(" (%s)", tracer.Printable(p.Unit))
	}
	return label
}

func shortID(id string) string { return id[:min(len(id), 12)] }

// cmdlineWidth is how much of a command line the text shows; JSON has it
// whole.
const cmdlineWidth = 100

// writeProcess writes one process's facts and the sockets it holds on the
// side asked.
func writeProcess(w io.Writer, r *snapshot.PortReport, pid uint32, serving bool, peers *peerIndex, opts WhoOptions) {
	p := r.Processes[pid]
	if p == nil {
		p = &proc.Process{Identity: proc.Identity{PID: pid}, Name: "?"}
	}
	fmt.Fprintf(w, "\n%s %d", tracer.Printable(p.Name), pid)
	if p.User != "" {
		fmt.Fprintf(w, "  user %s", tracer.Printable(p.User))
	}
	if p.RSSBytes > 0 {
		fmt.Fprintf(w, "  rss %s", bytesText(p.RSSBytes))
	}
	if !p.StartTime.IsZero() {
		fmt.Fprintf(w, "  up %s (since %s)", ageText(p.Age(opts.Now)), p.StartTime.In(opts.Now.Location()).Format("2006-01-02 15:04:05"))
	}
	if p.Exited {
		fmt.Fprint(w, "  exited")
	}
	fmt.Fprintln(w)
	if len(p.Ancestors) > 0 {
		var chain []string
		for _, a := range p.Ancestors {
			chain = append(chain, fmt.Sprintf("%s %d", tracer.Printable(a.Name), a.PID))
		}
		fmt.Fprintf(w, "  parents  %s\n", strings.Join(chain, " < "))
	}
	if restart := restartedBy(p); restart != "" {
		fmt.Fprintf(w, "  managed  %s\n", restart)
	}
	if cgroup := cgroupText(&p.Cgroup); cgroup != "" {
		fmt.Fprintf(w, "  cgroup   %s\n", cgroup)
	}
	if p.Exe != "" {
		fmt.Fprintf(w, "  exe      %s\n", tracer.Printable(p.Exe))
	}
	if p.Cmdline != "" {
		fmt.Fprintf(w, "  cmd      %s\n", p.CmdlineText(cmdlineWidth))
	}
	var conns []*snapshot.PortSocket
	type own struct {
		fd   int32
		line string
	}
	var lines []own
	for j := range r.Sockets {
		s := &r.Sockets[j]
		i := slices.Index(s.PIDs, pid)
		if i < 0 || r.Serves(s) != serving {
			continue
		}
		if s.Connected() && !opts.All {
			conns = append(conns, s)
			continue
		}
		fd := int32(-1)
		if i < len(s.FDs) {
			fd = s.FDs[i]
		}
		lines = append(lines, own{fd, fmt.Sprintf("  %-6s %s\n", fdText(s, i), socketLine(r, s, peers))})
	}
	// In descriptor order, as lsof lists them; the kernel's tables keep
	// none.
	slices.SortStableFunc(lines, func(a, b own) int { return cmp.Compare(a.fd, b.fd) })
	for _, l := range lines {
		io.WriteString(w, l.line)
	}
	writeConnections(w, r, pid, conns, peers)
}

// restartedBy says what would start the process again if it stopped, and
// how to stop that instead.
func restartedBy(p *proc.Process) string {
	what, stop := p.Manager()
	if what == "" {
		return ""
	}
	return tracer.Printable(what) + " (" + tracer.Printable(stop) + ")"
}

// cgroupText is a process's cgroup v2 path and id, "" where neither is
// known (Windows).
func cgroupText(c *proc.Cgroup) string {
	switch {
	case c.Path != "" && c.ID != 0:
		return tracer.Printable(c.Path) + " (id " + strconv.FormatUint(c.ID, 10) + ")"
	case c.Path != "":
		return tracer.Printable(c.Path)
	case c.ID != 0:
		return "id " + strconv.FormatUint(c.ID, 10)
	}
	return ""
}

func fdText(s *snapshot.PortSocket, i int) string {
	if i < len(s.FDs) {
		return "fd " + strconv.Itoa(int(s.FDs[i]))
	}
	return "" // the platform does not say (Windows' tables)
}

// socketLine is one socket: protocol, state, its ends, its queues and
// timer, and what its address admits or who its peer is.
func socketLine(r *snapshot.PortReport, s *snapshot.PortSocket, peers *peerIndex) string {
	line := fmt.Sprintf("%-5s %-12s %s", s.Proto, socketState(s), tracer.Endpoint(s.Local))
	if s.Connected() || s.Remote.Port() != 0 {
		line += " -> " + tracer.Endpoint(s.Remote)
		if name := peers.name(s); name != "" {
			line += " (" + name + ")"
		}
	}
	if s.State == tracer.StateListen {
		line += fmt.Sprintf("  backlog %d/%d", s.RecvQ, s.SendQ)
	} else if s.RecvQ > 0 || s.SendQ > 0 {
		line += fmt.Sprintf("  recv-q %d send-q %d", s.RecvQ, s.SendQ)
	}
	if s.Timer != "" && s.Timer != snapshot.TimerTimeWait {
		line += fmt.Sprintf("  timer %s %s", s.Timer, time.Duration(s.TimerNs).Round(time.Millisecond))
	}
	if !s.Connected() && s.Remote.Port() == 0 {
		line += "  " + snapshot.Scope(s.Local.Addr(), s.V6Only)
	}
	if label := r.NamespaceLabel(s.NetNS); label != "" {
		line += "  [" + label + "]"
	}
	return line
}

// anyPort is an address with any port, bracketed as tracer.Endpoint brackets an
// IPv6 one: [::1]:*, 127.0.0.1:*.
func anyPort(a netip.Addr) string {
	if a = a.Unmap(); a.Is6() {
		return "[" + a.String() + "]:*"
	}
	return a.String() + ":*"
}

// peerIndex finds, for a connection in the report, the socket at its other
// end when that end is on this host too. A busy port's text names only a
// few peers (maxPeers for each state of each process): its first
// questions scan the report, and only more of them, as --all asks, index
// it.
type peerIndex struct {
	r     *snapshot.PortReport
	scans int
	conns map[snapshot.SocketKey]*snapshot.PortSocket
}

// peerScans is how many questions a peerIndex answers by scanning.
const peerScans = 64

// name names the local process at a connection's other end.
func (x *peerIndex) name(s *snapshot.PortSocket) string {
	peer := x.peer(s)
	if peer == nil {
		return ""
	}
	r := x.r
	switch {
	case len(peer.PIDs) > 0:
		return processLabel(r, peer.PIDs[0])
	case peer.Seen != nil && peer.Seen.Exited:
		return fmt.Sprintf("%s %d, since exited, %s", tracer.Printable(peer.Seen.Name), peer.Seen.PID, peer.State)
	case peer.Seen != nil:
		return fmt.Sprintf("%s %d, %s", tracer.Printable(peer.Seen.Name), peer.Seen.PID, peer.State)
	}
	return "no process, " + peer.State.String()
}

// peer is the connection at s's other end, nil if none; of several with
// those ends, the last in the report.
func (x *peerIndex) peer(s *snapshot.PortSocket) *snapshot.PortSocket {
	want := snapshot.KeyOf(s.NetNS, s.Remote, s.Local)
	if x.conns == nil && x.scans < peerScans {
		x.scans++
		for i := len(x.r.Sockets) - 1; i >= 0; i-- {
			if c := &x.r.Sockets[i]; c.NetNS == want.NetNS && c.Connected() && snapshot.KeyOf(c.NetNS, c.Local, c.Remote) == want {
				return c
			}
		}
		return nil
	}
	if x.conns == nil {
		x.conns = make(map[snapshot.SocketKey]*snapshot.PortSocket, len(x.r.Sockets))
		for i := range x.r.Sockets {
			if c := &x.r.Sockets[i]; c.Connected() {
				x.conns[snapshot.KeyOf(c.NetNS, c.Local, c.Remote)] = c
			}
		}
	}
	return x.conns[want]
}

// maxPeers is how many peers a connection summary names per state.
const maxPeers = 3

// connGroup is what a process's connections are summed up by: their
// state, protocol and, on the serving side, the end they share (a
// dual-stack listener's IPv4 peers come to another address than its IPv6
// ones).
type connGroup struct {
	state tracer.State
	proto tracer.Proto
	local netip.AddrPort
}

// writeConnections counts a process's connections by state, protocol and
// local end, and names a few peers of each.
func writeConnections(w io.Writer, r *snapshot.PortReport, pid uint32, conns []*snapshot.PortSocket, peers *peerIndex) {
	byGroup := map[connGroup][]*snapshot.PortSocket{}
	var groups []connGroup
	for _, c := range conns {
		g := connGroup{state: c.State, proto: c.Proto}
		if r.Serves(c) {
			g.local = c.Local
		}
		if _, ok := byGroup[g]; !ok {
			groups = append(groups, g)
		}
		byGroup[g] = append(byGroup[g], c)
	}
	slices.SortFunc(groups, func(a, b connGroup) int {
		return cmp.Or(cmp.Compare(a.state, b.state), cmp.Compare(a.proto, b.proto), a.local.Compare(b.local))
	})
	for _, g := range groups {
		cs := byGroup[g]
		if len(cs) == 1 {
			fmt.Fprintf(w, "  %-6s %s\n", fdText(cs[0], slices.Index(cs[0].PIDs, pid)), socketLine(r, cs[0], peers))
			continue
		}
		var named []string
		for _, c := range cs[:min(len(cs), maxPeers)] {
			peer := tracer.Endpoint(c.Remote)
			if name := peers.name(c); name != "" {
				peer += " (" + name + ")"
			}
			named = append(named, peer)
		}
		more := ""
		if len(cs) > maxPeers {
			more = fmt.Sprintf(" and %d more", len(cs)-maxPeers)
		}
		// A server's connections share its end; a client's each have an
		// ephemeral one, and share only the port they go to.
		ends := "from " + tracer.Endpoint(cs[0].Local)
		if !r.Serves(cs[0]) {
			ends = "to port " + strconv.Itoa(int(r.Port))
		}
		fmt.Fprintf(w, "  %-6s %-5s %-12s %d connections %s: %s%s\n", "", g.proto, g.state, len(cs), ends, strings.Join(named, ", "), more)
	}
}

// writeUnheld writes the sockets no process holds, grouped by state, side,
// address and former owner with counts and the time left; with All, one
// line each.
func writeUnheld(w io.Writer, r *snapshot.PortReport, opts WhoOptions) {
	type group struct {
		label    string
		n        int
		min, max int64
	}
	var order []string
	groups := map[string]*group{}
	for i := range r.Sockets {
		s := &r.Sockets[i]
		if s.Held() {
			continue
		}
		owner := "owner unknown (no running porttrace saw it close)"
		if s.Seen != nil {
			owner = fmt.Sprintf("last owned by %s %d (seen by porttrace)", tracer.Printable(s.Seen.Name), s.Seen.PID)
			if s.Seen.Exited {
				owner += ", since exited"
			}
		}
		var ends string
		switch {
		case opts.All:
			ends = tracer.Endpoint(s.Local) + " -> " + tracer.Endpoint(s.Remote)
		case r.Serves(s):
			ends = tracer.Endpoint(s.Local) + " -> " + anyPort(s.Remote.Addr())
		default:
			ends = anyPort(s.Local.Addr()) + " -> " + tracer.Endpoint(s.Remote)
		}
		label := fmt.Sprintf("%-5s %-12s %s  %s", s.Proto, socketState(s), ends, owner)
		if ns := r.NamespaceLabel(s.NetNS); ns != "" {
			label += "  [" + ns + "]"
		}
		g, ok := groups[label]
		if !ok {
			g = &group{label: label, min: s.TimerNs, max: s.TimerNs}
			groups[label] = g
			order = append(order, label)
		}
		g.n++
		g.min, g.max = min(g.min, s.TimerNs), max(g.max, s.TimerNs)
	}
	if len(order) == 0 {
		return
	}
	fmt.Fprintf(w, "\nHELD BY NO PROCESS (the kernel keeps them until their timers end)\n")
	for _, label := range order {
		g := groups[label]
		left := ""
		lo, hi := time.Duration(g.min).Round(time.Second), time.Duration(g.max).Round(time.Second)
		switch {
		case g.max == 0:
		case lo == hi:
			left = fmt.Sprintf("  %s left", time.Duration(g.max).Round(100*time.Millisecond))
		default:
			left = fmt.Sprintf("  %s-%s left", lo, hi)
		}
		fmt.Fprintf(w, "  %7s  %s%s\n", count(g.n), label, left)
	}
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

func ageText(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return d.Round(time.Second).String()
}

// socketState names a socket's state; a UDP socket has none worth a name.
func socketState(s *snapshot.PortSocket) string {
	if s.Proto == tracer.ProtoUDP {
		return "-"
	}
	return s.State.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// jsonSocket and jsonReport are the JSON form of a report: a documented
// contract (README), like the watch's lines.
type jsonSocket struct {
	Proto      string        `json:"proto"`
	Family     string        `json:"family"`
	State      string        `json:"state"`
	Side       string        `json:"side"`
	Local      string        `json:"saddr"`
	LocalPort  uint16        `json:"sport"`
	Remote     string        `json:"daddr"`
	RemotePort uint16        `json:"dport"`
	Scope      string        `json:"scope,omitempty"`
	V6Only     bool          `json:"v6only,omitempty"`
	NetNS      uint32        `json:"netns"`
	NetNSName  string        `json:"netns_name,omitempty"`
	Timer      string        `json:"timer,omitempty"`
	TimerNs    int64         `json:"timer_ns,omitempty"`
	RecvQ      uint32        `json:"recv_q"`
	SendQ      uint32        `json:"send_q"`
	UID        uint32        `json:"uid"`
	PIDs       []uint32      `json:"pids"`
	FDs        []int32       `json:"fds"`
	Seen       *proc.Process `json:"seen,omitempty"`
}

// socketJSON is a socket's JSON form, shared by who and why.
func socketJSON(r *snapshot.PortReport, s *snapshot.PortSocket) jsonSocket {
	js := jsonSocket{
		Proto: s.Proto.String(), Family: s.Family.String(), State: socketState(s), Side: "connects",
		Local: s.Local.Addr().String(), LocalPort: s.Local.Port(),
		Remote: s.Remote.Addr().String(), RemotePort: s.Remote.Port(),
		V6Only: s.V6Only, NetNS: s.NetNS, NetNSName: r.NamespaceLabel(s.NetNS), Timer: s.Timer, TimerNs: s.TimerNs,
		RecvQ: s.RecvQ, SendQ: s.SendQ, UID: s.UID, PIDs: s.PIDs, FDs: s.FDs, Seen: s.Seen,
	}
	if r.Serves(s) {
		js.Side = "serves"
	}
	if js.PIDs == nil {
		js.PIDs = []uint32{}
	}
	if js.FDs == nil {
		js.FDs = []int32{}
	}
	if !s.Connected() && s.Remote.Port() == 0 {
		js.Scope = snapshot.Scope(s.Local.Addr(), s.V6Only)
	}
	return js
}

type jsonReport struct {
	Port      uint16          `json:"port"`
	Held      bool            `json:"held"`
	Headline  string          `json:"headline"`
	Processes []*proc.Process `json:"processes"`
	Sockets   []jsonSocket    `json:"sockets"`
	Notes     []string        `json:"notes,omitempty"`
}

// WhoJSON writes the report as one JSON object on one line, every socket
// listed.
func WhoJSON(w io.Writer, r *snapshot.PortReport) error {
	out := jsonReport{Port: r.Port, Held: r.Held(), Headline: headline(r), Processes: []*proc.Process{}, Sockets: []jsonSocket{}, Notes: r.Notes}
	for _, pid := range r.PIDs() {
		if p := r.Processes[pid]; p != nil {
			out.Processes = append(out.Processes, p)
		}
	}
	for _, s := range r.Sockets {
		out.Sockets = append(out.Sockets, socketJSON(r, &s))
	}
	return writeJSONLine(w, out)
}

// writeJSONLine writes v as one line of JSON, without escaping <, > and &
// (the watch's lines do not either: this is not HTML).
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
