package top

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/correlate"
)

// Row is one line of the table: a port and the process owning sockets on
// it, or acting on it.
type Row struct {
	Key
	Comm tracer.Comm
	// Exited says the owner has exited: its sockets outlived it.
	Exited bool
	// States counts the row's sockets by state (timewait sockets by their
	// substate: TIME_WAIT, or FIN_WAIT2 for an orphan), Sockets all of
	// them.
	States  [tracer.StateCount]int
	Sockets int
	// OpenedPerSec and ClosedPerSec are connections that reached
	// ESTABLISHED, and that left it, per second since the last table.
	OpenedPerSec, ClosedPerSec float64
	// CloseWait and TimeWait are the ages of the row's oldest CLOSE_WAIT
	// and TIME_WAIT sockets.
	CloseWait, TimeWait Age
	BindFailures        uint64
	LastBindErr         int32
}

// Age is how long a socket has been in its state. A socket older than the
// watch has been there at least Ns: AtLeast.
type Age struct {
	Ns      int64
	AtLeast bool
	Set     bool
}

// older keeps the older of a and the age of a socket in its state since
// sinceNs (0: since before the watch began at startNs).
func (a *Age) older(nowNs, sinceNs, startNs int64) {
	b := Age{Ns: nowNs - sinceNs, Set: true}
	if sinceNs == 0 {
		b = Age{Ns: nowNs - startNs, AtLeast: true, Set: true}
	}
	if !a.Set || b.Ns > a.Ns || (b.Ns == a.Ns && b.AtLeast) {
		*a = b
	}
}

func (a Age) String() string {
	if !a.Set {
		return "-"
	}
	s := compactDuration(a.Ns)
	if a.AtLeast {
		s = ">" + s
	}
	return s
}

// compactDuration is a duration in at most two units, seconds at least:
// 9s, 4m05s, 2h03m.
func compactDuration(ns int64) string {
	d := time.Duration(ns).Round(time.Second)
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
}

// Table is what the screen shows at one moment.
type Table struct {
	AtNs int64
	Rows []Row
	// Sockets counts every socket of the rows.
	Sockets int
}

// Build joins the sockets of the index with the sink's counts now and at
// the last table (prev, nil for the first, which counts from the watch's
// start at startNs) into rows, sorted by port and process. nowNs and
// startNs are on the events' clock; elapsed is the wall time since the
// last table.
func Build(ix *correlate.Index, now, prev *Snapshot, watched tracer.Ports, nowNs, startNs int64, elapsed time.Duration) *Table {
	t := &Table{AtNs: nowNs}
	at := map[Key]int{}
	row := func(k Key, comm tracer.Comm) *Row {
		i, ok := at[k]
		if !ok {
			i = len(t.Rows)
			at[k] = i
			t.Rows = append(t.Rows, Row{Key: k, Comm: comm})
		}
		return &t.Rows[i]
	}
	// The timewait sockets of connections older than the watch have no
	// owner: a row of their own (PID 0) per port.
	for o := range ix.EverySocket() {
		k := Key{Port: ServicePort(o.Local.Port(), o.Remote.Port(), o.Role, watched), NetNS: o.NetNS, PID: o.Process.PID, StartNs: o.Process.StartNs}
		r := row(k, o.Process.Comm)
		r.Exited = r.Exited || o.Exited
		r.States[o.State]++
		r.Sockets++
		t.Sockets++
		switch o.State {
		case tracer.StateCloseWait:
			r.CloseWait.older(nowNs, o.SinceNs, startNs)
		case tracer.StateTimeWait:
			r.TimeWait.older(nowNs, o.SinceNs, startNs)
		}
	}
	secs := elapsed.Seconds()
	for k, c := range now.Rows {
		r := row(k, c.Comm)
		var before Counts
		if prev != nil {
			before = prev.Rows[k]
		}
		if secs > 0 {
			r.OpenedPerSec = float64(c.Opened-before.Opened) / secs
			r.ClosedPerSec = float64(c.Closed-before.Closed) / secs
		}
		r.BindFailures, r.LastBindErr = c.BindFailures, c.LastBindErr
	}
	// A row only counts once told stays until its process has nothing
	// left to show.
	t.Rows = slices.DeleteFunc(t.Rows, func(r Row) bool {
		return r.Sockets == 0 && r.OpenedPerSec == 0 && r.ClosedPerSec == 0 && r.BindFailures == 0
	})
	t.Sort(SortPort)
	return t
}

// SortKey orders the rows.
type SortKey uint8

const (
	SortPort SortKey = iota
	SortSockets
	SortConns
	SortCloseWait
	SortBinds
	sortKeys
)

// sortNames and sortLetters are each key's name (--sort) and its key on
// the screen.
var (
	sortNames   = [sortKeys]string{"port", "sockets", "conns", "close-wait", "binds"}
	sortLetters = [sortKeys]byte{'p', 's', 'c', 'w', 'f'}
)

func (k SortKey) String() string { return sortNames[k] }

// SortNames are the names --sort takes.
func SortNames() []string { return sortNames[:] }

// ParseSortKey reads --sort.
func ParseSortKey(s string) (SortKey, error) {
	if i := slices.Index(sortNames[:], s); i >= 0 {
		return SortKey(i), nil
	}
	return 0, fmt.Errorf("invalid sort key %q: want one of port, sockets, conns, close-wait, binds", s)
}

// SortKeyOf is the sort key a key on the screen selects.
func SortKeyOf(letter byte) (SortKey, bool) {
	i := slices.Index(sortLetters[:], letter)
	return SortKey(i), i >= 0
}

// SortHelp says which key sorts by what: "p port, s sockets, ...".
func SortHelp() string {
	s := ""
	for k := range sortKeys {
		if k > 0 {
			s += ", "
		}
		s += string(sortLetters[k]) + " " + sortNames[k]
	}
	return s
}

// Sort orders the rows by key, largest first (by port: smallest first),
// ties by port and process.
func (t *Table) Sort(key SortKey) {
	slices.SortStableFunc(t.Rows, func(a, b Row) int {
		var c int
		switch key {
		case SortSockets:
			c = cmp.Compare(b.Sockets, a.Sockets)
		case SortConns:
			c = cmp.Compare(b.OpenedPerSec+b.ClosedPerSec, a.OpenedPerSec+a.ClosedPerSec)
		case SortCloseWait:
			c = cmp.Or(cmp.Compare(b.States[tracer.StateCloseWait], a.States[tracer.StateCloseWait]), cmp.Compare(b.CloseWait.Ns, a.CloseWait.Ns))
		case SortBinds:
			c = cmp.Compare(b.BindFailures, a.BindFailures)
		}
		return cmp.Or(c, cmp.Compare(a.Port, b.Port), cmp.Compare(a.NetNS, b.NetNS), cmp.Compare(a.PID, b.PID), cmp.Compare(a.StartNs, b.StartNs))
	})
}

// Header is the table's column header.
const Header = "PORT\tPID\tCOMMAND\tSOCKETS\tLISTEN\tESTAB\tCLOSE_WAIT\tTIME_WAIT\tOTHER\tOPENED/s\tCLOSED/s\tOLDEST_CW\tOLDEST_TW\tBIND_FAILS"

// WriteRows writes the header and at most limit rows (limit < 0: all) as
// aligned plain text, and says how many rows did not fit. netnsLabel
// labels a network namespace other than top's own ("" for its own; nil:
// no labels), after the command.
func (t *Table) WriteRows(w io.Writer, limit int, netnsLabel func(uint32) string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, Header)
	rows := t.Rows
	if limit >= 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	for i := range rows {
		r := &rows[i]
		pid, comm := "-", "?"
		if r.PID != 0 {
			pid, comm = strconv.FormatUint(uint64(r.PID), 10), r.Comm.String()
			if r.Exited {
				comm += " (exited)"
			}
		}
		if netnsLabel != nil {
			if label := netnsLabel(r.NetNS); label != "" {
				comm += " [" + label + "]"
			}
		}
		other := r.Sockets - r.States[tracer.StateListen] - r.States[tracer.StateEstablished] - r.States[tracer.StateCloseWait] - r.States[tracer.StateTimeWait]
		binds := strconv.FormatUint(r.BindFailures, 10)
		if r.BindFailures > 0 {
			binds += " (" + tracer.ErrnoName(r.LastBindErr) + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%s\t%s\t%s\n",
			r.Port, pid, comm, r.Sockets, r.States[tracer.StateListen], r.States[tracer.StateEstablished],
			r.States[tracer.StateCloseWait], r.States[tracer.StateTimeWait], other,
			r.OpenedPerSec, r.ClosedPerSec, r.CloseWait, r.TimeWait, binds)
	}
	if hidden := len(t.Rows) - len(rows); hidden > 0 {
		fmt.Fprintf(tw, "(%d more rows)\n", hidden)
	}
	return tw.Flush()
}
