package render

import (
	"github.com/porttrace/porttrace/tracer"

	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// Column widths of the text format. The endpoint columns start wide enough
// for any IPv4 endpoint and grow to fit the widest seen (Text.fit).
const (
	widthPID        = 7
	widthComm       = 16
	widthEndpoint   = 22
	widthTransition = 26
)

// TimeFormat is how a text line writes its time.
type TimeFormat uint8

const (
	// TimeClock is the time of day to the microsecond: 15:04:05.000000.
	TimeClock TimeFormat = iota
	// TimeDate is the date and time: 2006-01-02 15:04:05.000000.
	TimeDate
	// TimeRelative is the seconds since the watch started: 12.345678.
	TimeRelative
)

var timeFormatNames = [...]string{TimeClock: "clock", TimeDate: "date", TimeRelative: "relative"}

// TimeFormatNames are the names ParseTimeFormat reads, in order.
func TimeFormatNames() []string { return timeFormatNames[:] }

func (f TimeFormat) String() string {
	if int(f) < len(timeFormatNames) {
		return timeFormatNames[f]
	}
	return "unknown"
}

// ParseTimeFormat reads a time format by its name.
func ParseTimeFormat(s string) (TimeFormat, error) {
	for i, name := range timeFormatNames {
		if s == name {
			return TimeFormat(i), nil
		}
	}
	return 0, fmt.Errorf("invalid time format %q: want clock, date or relative", s)
}

// layout is the time layout of the clock formats.
func (f TimeFormat) layout() string {
	if f == TimeDate {
		return "2006-01-02 15:04:05.000000"
	}
	return "15:04:05.000000"
}

// width is the width of the TIME column: the clock formats' length, and
// room for relative times up to 11 days.
func (f TimeFormat) width() int { return max(len(f.layout()), len("999999.999999")) }

// Text writes records as aligned lines of text. It remembers the widest
// endpoint it has written, so it is one per output, used from one
// goroutine.
type Text struct {
	// Location is the time zone of the clock formats; nil means local time.
	Location *time.Location
	Time     TimeFormat
	// StartNs is when the watch started: the zero of TimeRelative.
	StartNs int64
	// Color colours the transition (ANSI), for a terminal.
	Color bool
	// Connections says the lines are connections (AppendConnection), for
	// the header.
	Connections bool
	// Labels name the namespaces and cgroups of lines; nil, none.
	Labels *Labels

	// endpoint is the width of the LOCAL and REMOTE columns, 0 until the
	// first header; scratch holds a line's endpoints, formatted once to be
	// measured and then copied.
	endpoint int
	scratch  []byte
	// clock is the last second's date (for TimeDate) and clock.
	clock keptClock
	// owner holds the PID and COMM columns of the last owner written: a
	// storm's lines name a program or two, thousands of times a second.
	owner struct {
		pid     uint32
		comm    tracer.Comm
		columns []byte
	}
}

// AppendHeader appends the line of column titles.
func (t *Text) AppendHeader(b []byte) []byte {
	t.endpoint = max(t.endpoint, widthEndpoint)
	if t.Connections {
		return t.appendConnectionHeader(b)
	}
	b = appendPadded(b, "TIME", t.Time.width()+1)
	b = appendPadded(b, "PID", widthPID+1)
	b = appendPadded(b, "COMM", widthComm+1)
	b = appendPadded(b, "LOCAL", t.endpoint+1)
	b = appendPadded(b, "REMOTE", t.endpoint+1)
	b = appendPadded(b, "TRANSITION", widthTransition+1)
	b = append(b, "MS"...)
	return append(b, '\n')
}

// endpoints formats a line's two endpoints into scratch, once: fit measures
// them, the line copies them.
func (t *Text) endpoints(a, b netip.AddrPort) (first, second []byte) {
	t.scratch = appendEndpoint(t.scratch[:0], a.Addr(), a.Port())
	n := len(t.scratch)
	t.scratch = appendEndpoint(t.scratch, b.Addr(), b.Port())
	return t.scratch[:n], t.scratch[n:]
}

// fit widens the endpoint columns to fit two formatted endpoints, and says
// whether it had to.
func (t *Text) fit(first, second []byte) bool {
	widest := max(t.endpoint, len(first)+1, len(second)+1)
	if widest == t.endpoint {
		return false
	}
	t.endpoint = widest
	return true
}

// appendTime writes a line's time as the format says.
func (t *Text) appendTime(b []byte, timeNs int64) []byte {
	if t.Time == TimeRelative {
		return strconv.AppendFloat(b, float64(timeNs-t.StartNs)/1e9, 'f', 6, 64)
	}
	if timeNs < 0 {
		return append(b, '-')
	}
	loc := t.Location
	if loc == nil {
		loc = time.Local
	}
	b = t.clock.append(b, timeNs/1e9, loc, t.Time == TimeDate, ' ')
	return appendDigits(b, int(timeNs%1e9/1e3), 6)
}

// keptClock keeps the date and clock of the last second written: lines
// come by the thousand within one.
type keptClock struct {
	second int64
	clock  []byte
}

// append writes second (since 1970) as appendDateClock does in loc's
// zone (nil: UTC), writing it anew only where it is not the last second.
func (k *keptClock) append(b []byte, second int64, loc *time.Location, date bool, sep byte) []byte {
	if k.clock == nil || k.second != second {
		offset := 0
		if loc != nil {
			// The whole second is in one offset of its zone.
			_, offset = time.Unix(second, 0).In(loc).Zone()
		}
		k.second, k.clock = second, appendDateClock(k.clock[:0], second+int64(offset), date, sep)
	}
	return append(b, k.clock...)
}

// appendDigits writes v, from 0 to 10^n-1, as n digits with leading zeros.
func appendDigits(b []byte, v, n int) []byte {
	start := len(b)
	b = append(b, "000000000"[:n]...)
	for i := len(b) - 1; i >= start && v > 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return b
}

// ANSI colours for the new state, on a terminal only.
const (
	colorReset  = "\x1b[0m"
	colorGreen  = "\x1b[32m"
	colorYellow = "\x1b[33m"
	colorRed    = "\x1b[31m"
	colorCyan   = "\x1b[36m"
)

func stateColor(r *tracer.Record) string {
	switch {
	case r.Err != 0:
		return colorRed
	case r.Type == tracer.RecordBind, r.Type == tracer.RecordOwner, r.New == tracer.StateListen:
		return colorCyan
	case r.New == tracer.StateEstablished:
		return colorGreen
	case r.New == tracer.StateTimeWait, r.New == tracer.StateFinWait2, r.New == tracer.StateCloseWait:
		return colorYellow
	case r.New == tracer.StateClose:
		return colorRed
	}
	return ""
}

// AppendRecord appends r as one aligned line, ending with the labels of
// its owner's container and its network namespace (Labels); when its
// endpoints are wider than the columns so far, the columns widen and a
// header line with the new widths comes first.
func (t *Text) AppendRecord(b []byte, r *tracer.Record) []byte {
	local, remote := t.endpoints(netip.AddrPortFrom(r.SAddr, r.SPort), netip.AddrPortFrom(r.DAddr, r.DPort))
	if t.fit(local, remote) {
		b = t.AppendHeader(b)
	}
	start := len(b)
	b = t.appendTime(b, r.TimeNs)
	b = pad(b, start, t.Time.width()+1)
	b = t.appendOwner(b, &r.Process)

	start = len(b)
	b = append(b, local...)
	b = pad(b, start, t.endpoint+1)

	start = len(b)
	switch {
	case r.Type == tracer.RecordBind:
		b = append(b, '-')
	case r.DPort == 0 && (!r.DAddr.IsValid() || r.DAddr.IsUnspecified()):
		b = append(b, '*') // a listener has no peer, as ss prints it
	default:
		b = append(b, remote...)
	}
	b = pad(b, start, t.endpoint+1)

	start = len(b)
	c := ""
	if t.Color {
		c = stateColor(r)
	}
	b = append(b, c...)
	switch r.Type {
	case tracer.RecordBind:
		b = append(b, "BIND "...)
		b = append(b, r.Proto.String()...)
		if r.Err != 0 {
			b = append(b, ' ')
			b = append(b, tracer.ErrnoName(r.Err)...)
		}
	case tracer.RecordSocket:
		b = append(b, "at start: "...)
		b = append(b, r.New.String()...)
		if r.Proto == tracer.ProtoUDP {
			// Else a bound UDP socket reads as a TCP socket bound
			// and not listening: both are CLOSE.
			b = append(b, " udp"...)
		}
	case tracer.RecordOwner:
		b = append(b, "OWNER "...)
		b = append(b, r.New.String()...)
	default:
		b = append(b, r.Old.String()...)
		b = append(b, " -> "...)
		b = append(b, r.New.String()...)
	}
	if c != "" {
		b = append(b, colorReset...)
		start += len(c) + len(colorReset)
	}
	b = pad(b, start, widthTransition+1)

	b = appendMs(b, r.DurationNs)
	if r.TimeoutNs > 0 && r.Type == tracer.RecordSocket {
		b = append(b, "  "...)
		b = strconv.AppendFloat(b, float64(r.TimeoutNs)/1e9, 'f', 1, 64)
		b = append(b, "s left"...)
	} else if r.TimeoutNs > 0 {
		b = append(b, "  timeout "...)
		b = strconv.AppendFloat(b, float64(r.TimeoutNs)/1e9, 'f', 1, 64)
		b = append(b, 's')
	}
	if r.Reason != "" {
		b = append(b, "  "...)
		b = append(b, r.Reason...)
	}
	if r.Err != 0 && r.Type != tracer.RecordBind {
		b = append(b, "  "...)
		b = append(b, tracer.ErrnoName(r.Err)...)
	}
	if r.OwnerVia == tracer.OwnerListener {
		b = append(b, "  (not accepted: listener's owner)"...)
	}
	if r.OwnerExited {
		b = append(b, "  (owner exited)"...)
	}
	if r.Type == tracer.RecordOwner {
		b = append(b, "  from "...)
		b = strconv.AppendUint(b, uint64(r.Prev.PID), 10)
		b = append(b, ' ')
		b = tracer.AppendPrintable(b, r.Prev.Comm.Bytes())
		if r.PrevExited {
			b = append(b, " (exited)"...)
		}
		b = append(b, " via "...)
		b = append(b, r.OwnerVia.String()...)
	}
	b = appendThread(b, &r.Process)
	if r.Late {
		b = append(b, "  (late)"...)
	}
	b = t.Labels.appendText(b, r)
	return append(b, '\n')
}

// appendOwner is appendOwner, remembering the last owner's columns.
func (t *Text) appendOwner(b []byte, p *tracer.Process) []byte {
	if o := &t.owner; o.columns == nil || o.pid != p.PID || o.comm != p.Comm {
		o.pid, o.comm, o.columns = p.PID, p.Comm, appendOwner(o.columns[:0], p)
	}
	return append(b, t.owner.columns...)
}

// appendOwner writes the PID and COMM columns of a socket's owner.
func appendOwner(b []byte, p *tracer.Process) []byte {
	start := len(b)
	if p.PID == 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendUint(b, uint64(p.PID), 10)
	}
	b = pad(b, start, widthPID+1)
	start = len(b)
	if comm := p.Comm.Bytes(); len(comm) > 0 {
		b = tracer.AppendPrintable(b, comm)
	} else {
		b = append(b, '?')
	}
	return pad(b, start, widthComm+1)
}

// appendThread names, after a line, the thread that acted where it has a
// name of its own: the COMM column names the program.
func appendThread(b []byte, p *tracer.Process) []byte {
	if p.Thread == p.Comm {
		return b // most programs' threads: a comparison of two words
	}
	if thread := p.Thread.Bytes(); len(thread) > 0 && !bytes.Equal(thread, p.Comm.Bytes()) {
		b = append(b, "  thread "...)
		b = tracer.AppendPrintable(b, thread)
	}
	return b
}

// appendMs writes a duration in milliseconds to the microsecond (halves
// up), or - for one not known: in integers, which a storm's lines cost a
// third of what floating point's formatting did.
func appendMs(b []byte, ns int64) []byte {
	if ns < 0 {
		return append(b, '-')
	}
	us := (ns + 500) / 1e3
	b = strconv.AppendInt(b, us/1e3, 10)
	b = append(b, '.')
	return appendDigits(b, int(us%1e3), 3)
}

// appendEndpoint writes an address and port, an IPv4-mapped address as the
// IPv4 address it is: a dual-stack server's peers then read as they do on
// their own side.
func appendEndpoint(b []byte, addr netip.Addr, port uint16) []byte {
	return netip.AddrPortFrom(addr.Unmap(), port).AppendTo(b)
}

// pad fills the column that started at start to width, always leaving one
// space before the next column.
func pad(b []byte, start, width int) []byte {
	n := width - (len(b) - start)
	if n < 1 {
		n = 1
	}
	for ; n > 0; n-- {
		b = append(b, ' ')
	}
	return b
}

func appendPadded(b []byte, s string, width int) []byte {
	start := len(b)
	return pad(append(b, s...), start, width)
}

// appendProcessJSON writes an owner's fields, each after a comma: pid,
// comm, thread, start_ns, cgroup_id.
func appendProcessJSON(b []byte, p *tracer.Process) []byte {
	b = append(b, `,"pid":`...)
	b = strconv.AppendUint(b, uint64(p.PID), 10)
	b = append(b, `,"comm":`...)
	b = appendJSONString(b, p.Comm.Bytes())
	b = append(b, `,"thread":`...)
	b = appendJSONString(b, p.Thread.Bytes())
	b = append(b, `,"start_ns":`...)
	b = strconv.AppendUint(b, p.StartNs, 10)
	b = append(b, `,"cgroup_id":`...)
	return strconv.AppendUint(b, p.CgroupID, 10)
}

// JSONTimeLayout is RFC 3339 with nanoseconds always written, so that every
// "time" field has the same width and sorts as text.
const JSONTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// appendJSONTime writes a time in JSONTimeLayout, in UTC.
func appendJSONTime(b []byte, timeNs int64) []byte {
	var none *jsonKept
	return none.appendTime(b, timeNs)
}

// appendNanoseconds writes the nine digits of a second's fraction, f
// nanoseconds, and the zone, UTC.
func appendNanoseconds(b []byte, f int) []byte {
	b = appendTwo(b, f/1e7)
	b = appendTwo(b, f/1e5%100)
	b = appendTwo(b, f/1e3%100)
	b = appendTwo(b, f/10%100)
	return append(b, byte('0'+f%10), 'Z')
}

// appendDateClock writes the time secs seconds after 1970-01-01 00:00 (UTC,
// or a zone's offset added) as 15:04:05 and a point, after its date and sep
// (2006-01-02 and a space, or 2006-01-02T) where date is set: the layouts
// of the text's clock formats and of JSON's time, worked out from the
// seconds two digits at a time. time.AppendFormat reads its layout for
// every line (a tenth of a watch's CPU in a storm), and time.Time's Date
// and Clock with a division a digit made JSON's time a twentieth.
func appendDateClock(b []byte, secs int64, date bool, sep byte) []byte {
	days, second := secs/86400, secs%86400
	if second < 0 {
		days, second = days-1, second+86400
	}
	if date {
		year, month, day := civilDate(days)
		b = appendTwo(b, year/100)
		b = appendTwo(b, year%100)
		b = append(b, '-')
		b = appendTwo(b, month)
		b = append(b, '-')
		b = appendTwo(b, day)
		b = append(b, sep)
	}
	b = appendTwo(b, int(second/3600))
	b = append(b, ':')
	b = appendTwo(b, int(second%3600/60))
	b = append(b, ':')
	b = appendTwo(b, int(second%60))
	return append(b, '.')
}

// digitPairs are the numbers 00 to 99, two digits each.
const digitPairs = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// appendTwo writes v, from 0 to 99, as two digits.
func appendTwo(b []byte, v int) []byte {
	return append(b, digitPairs[2*v], digitPairs[2*v+1])
}

// civilDate is the date (proleptic Gregorian) days after 1970-01-01, by
// the arithmetic of eras of 400 years (H. Hinnant's civil_from_days), for
// years 0 to 9999 (two pairs of digits): every date an int64 of
// nanoseconds reaches.
func civilDate(days int64) (year, month, day int) {
	z := days + 719468 // from 0000-03-01
	era := z / 146097
	if z < 0 {
		era = (z - 146096) / 146097
	}
	dayOfEra := z - era*146097
	yearOfEra := (dayOfEra - dayOfEra/1460 + dayOfEra/36524 - dayOfEra/146096) / 365
	dayOfYear := dayOfEra - (365*yearOfEra + yearOfEra/4 - yearOfEra/100) // from March 1
	m := (5*dayOfYear + 2) / 153
	day = int(dayOfYear - (153*m+2)/5 + 1)
	month = int(m + 3)
	if month > 12 {
		month -= 12
	}
	year = int(yearOfEra + era*400)
	if month <= 2 {
		year++
	}
	return year, month, day
}

// AppendJSON appends r as one JSON object and a newline, with the fields
// labels knows of its owner's cgroup (nil labels: none). The fields are a
// documented contract (README): add, never rename.
func AppendJSON(b []byte, r *tracer.Record, labels *Labels) []byte {
	return appendJSON(b, r, labels, nil)
}

// jsonKept keeps what the JSON lines of a storm repeat, thousands of
// times a second: the fields of the last process written (a program or
// two, whose start time and cgroup are long numbers to write out), and the
// date and clock of the last second.
type jsonKept struct {
	process tracer.Process
	fields  []byte
	clock   keptClock
}

// appendProcess writes p's fields, those kept where p is the last process
// (a nil keeper keeps none).
func (k *jsonKept) appendProcess(b []byte, p *tracer.Process) []byte {
	if k == nil {
		return appendProcessJSON(b, p)
	}
	if k.fields == nil || k.process != *p {
		k.process, k.fields = *p, appendProcessJSON(k.fields[:0], p)
	}
	return append(b, k.fields...)
}

// appendTime writes a time as appendJSONTime does, the date and clock of
// the last second kept.
func (k *jsonKept) appendTime(b []byte, timeNs int64) []byte {
	secs, frac := timeNs/1e9, timeNs%1e9
	if frac < 0 {
		secs, frac = secs-1, frac+1e9
	}
	if k == nil {
		b = appendDateClock(b, secs, true, 'T')
	} else {
		b = k.clock.append(b, secs, nil, true, 'T')
	}
	return appendNanoseconds(b, int(frac))
}

// appendJSON is AppendJSON with what kept keeps.
func appendJSON(b []byte, r *tracer.Record, labels *Labels, kept *jsonKept) []byte {
	b = append(b, `{"time":"`...)
	b = kept.appendTime(b, r.TimeNs)
	b = append(b, `","type":"`...)
	b = append(b, r.Type.String()...)
	b = append(b, `","proto":"`...)
	b = append(b, r.Proto.String()...)
	b = append(b, `","family":"`...)
	b = append(b, r.Family.String()...)
	b = append(b, `","saddr":"`...)
	b = r.SAddr.AppendTo(b)
	b = append(b, `","sport":`...)
	b = strconv.AppendUint(b, uint64(r.SPort), 10)
	if r.Type == tracer.RecordBind {
		b = append(b, `,"daddr":null,"dport":null,"old":null,"new":null`...)
	} else {
		b = append(b, `,"daddr":"`...)
		b = r.DAddr.AppendTo(b)
		b = append(b, `","dport":`...)
		b = strconv.AppendUint(b, uint64(r.DPort), 10)
		if r.Type == tracer.RecordSocket || r.Type == tracer.RecordOwner {
			b = append(b, `,"old":null,"new":"`...)
		} else {
			b = append(b, `,"old":"`...)
			b = append(b, r.Old.String()...)
			b = append(b, `","new":"`...)
		}
		b = append(b, r.New.String()...)
		b = append(b, '"')
	}
	b = kept.appendProcess(b, &r.Process)
	b = labels.appendJSON(b, r)
	b = append(b, `,"owner_via":"`...)
	b = append(b, r.OwnerVia.String()...)
	b = append(b, `","netns":`...)
	b = strconv.AppendUint(b, uint64(r.NetNS), 10)
	b = append(b, `,"duration_ns":`...)
	b = appendNsOrNull(b, r.DurationNs)
	if r.TimeoutNs > 0 {
		b = append(b, `,"timeout_ns":`...)
		b = strconv.AppendInt(b, r.TimeoutNs, 10)
	}
	if r.Reason != "" {
		b = append(b, `,"reason":"`...)
		b = append(b, r.Reason...)
		b = append(b, '"')
	}
	if r.OwnerExited {
		b = append(b, `,"owner_exited":true`...)
	}
	if r.Type == tracer.RecordOwner {
		b = append(b, `,"prev_pid":`...)
		b = strconv.AppendUint(b, uint64(r.Prev.PID), 10)
		b = append(b, `,"prev_comm":`...)
		b = appendJSONString(b, r.Prev.Comm.Bytes())
		b = append(b, `,"prev_start_ns":`...)
		b = strconv.AppendUint(b, r.Prev.StartNs, 10)
		b = append(b, `,"prev_exited":`...)
		b = strconv.AppendBool(b, r.PrevExited)
	}
	if r.Err != 0 {
		b = append(b, `,"error":"`...)
		b = append(b, tracer.ErrnoName(r.Err)...)
		b = append(b, '"')
	}
	if r.Late {
		b = append(b, `,"late":true`...)
	}
	return append(b, "}\n"...)
}

// appendJSONString writes s as a JSON string, escaping what JSON requires
// and replacing invalid UTF-8, as encoding/json does. A run of bytes that
// need neither (a process name nearly always is one) is copied at once:
// decoding each byte as a rune was a twentieth of a JSON watch's CPU.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for len(s) > 0 {
		plain := 0
		for plain < len(s) && s[plain] >= 0x20 && s[plain] < utf8.RuneSelf && s[plain] != '"' && s[plain] != '\\' {
			plain++
		}
		b, s = append(b, s[:plain]...), s[plain:]
		if len(s) == 0 {
			break
		}
		r, size := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			b = append(b, s[:size]...)
		}
		s = s[size:]
	}
	return append(b, '"')
}
