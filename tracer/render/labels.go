package render

import (
	"encoding/json"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
)

const (
	// maxLabels bounds the namespaces and the cgroups whose labels are
	// kept: a host that starts and stops containers all day makes new
	// ones for each.
	maxLabels = 4096
	// maxLabelBytes bounds what each label adds to a line, so that a line
	// stays within what the Printer keeps room for (a cgroup path or a
	// namespace's name may be as long as a file name, and escaped).
	maxLabelBytes = 1024
)

// Labels names what a watch's lines carry only as numbers: the network
// namespace, when not the watch's own (text: [NAME] or [netns:[INODE]], as
// who labels sockets; JSON has netns already), and the owner's cgroup
// (JSON: cgroup, its path, and container; text: the container, where
// there is one).
//
// Naming may take system calls (a look at /run/netns, a walk of the
// cgroup2 mount), so it is done the first time a namespace or cgroup
// appears in a line, and the label kept: a line of one seen before costs
// a map lookup, and allocates nothing (a cgroup not found is asked about
// again during its first seconds). One goroutine uses it (the
// Printer's caller). A nil *Labels labels nothing.
type Labels struct {
	// OwnNetNS is the watch's own network namespace: its lines go
	// unlabelled.
	OwnNetNS uint32
	// NetNSName labels another network namespace.
	NetNSName func(inode uint32) string
	// Cgroup names a cgroup by its id; nil where cgroups are unknown.
	Cgroup func(id uint64) (proc.Cgroup, bool)

	netns   map[uint32][]byte
	cgroups map[uint64]cgroupLabel
	// recent are the last two cgroups named, the latest first: most
	// lines come from a server's cgroup or its clients', and a comparison
	// costs less than the map.
	recent [2]recentCgroup
}

type recentCgroup struct {
	id    uint64
	label cgroupLabel
}

// cgroupLabel is a cgroup as lines print it: text the container's label
// (nil where it is in none), json the fields that follow cgroup_id. A
// cgroup not found is asked about again for a while after its first line
// (firstNs), since the index of cgroups is walked again at most once a
// second and a container's first line follows its cgroup's creation
// closely; a cgroup removed since stays unnamed after that.
type cgroupLabel struct {
	text, json []byte
	named      bool
	firstNs    int64
}

// cgroupRetryNs is how long after its first line a cgroup not found is
// asked about again.
const cgroupRetryNs = 3e9

// NetNS labels a network namespace other than the watch's own, "" for
// its own or one it cannot name: what top prints after a command.
func (l *Labels) NetNS(netns uint32) string { return string(l.netnsLabel(netns)) }

// netnsLabel is namespace netns's label, printable, nil for the watch's
// own or an unknown one (0).
func (l *Labels) netnsLabel(netns uint32) []byte {
	if l == nil || l.NetNSName == nil || netns == l.OwnNetNS || netns == 0 {
		return nil
	}
	if b, ok := l.netns[netns]; ok {
		return b
	}
	if l.netns == nil || len(l.netns) >= maxLabels {
		l.netns = map[uint32][]byte{}
	}
	b := tracer.AppendPrintable(nil, l.NetNSName(netns))
	if len(b) > maxLabelBytes {
		b = append(b[:maxLabelBytes], "…"...)
	}
	l.netns[netns] = b
	return b
}

// cgroup is the label of cgroup id, for a line at nowNs; empty for an
// unknown one (0, or one removed before it was named).
func (l *Labels) cgroup(id uint64, nowNs int64) cgroupLabel {
	if l == nil || l.Cgroup == nil || id == 0 {
		return cgroupLabel{}
	}
	switch id {
	case l.recent[0].id:
		return l.recent[0].label
	case l.recent[1].id:
		l.recent[0], l.recent[1] = l.recent[1], l.recent[0]
		return l.recent[0].label
	}
	known, ok := l.cgroups[id]
	if ok && known.named {
		l.recent[1], l.recent[0] = l.recent[0], recentCgroup{id, known}
		return known
	}
	if ok && nowNs-known.firstNs > cgroupRetryNs {
		return known
	}
	if !ok && (l.cgroups == nil || len(l.cgroups) >= maxLabels) {
		l.cgroups = map[uint64]cgroupLabel{}
	}
	label := cgroupLabel{firstNs: nowNs}
	if ok {
		label.firstNs = known.firstNs
	}
	if c, found := l.Cgroup(id); found {
		label = newCgroupLabel(&c)
	}
	l.cgroups[id] = label
	return label
}

// newCgroupLabel labels cgroup c; a path too long for a line (which no
// runtime makes) is left to who, and the line keeps the id.
func newCgroupLabel(c *proc.Cgroup) cgroupLabel {
	label := cgroupLabel{named: true}
	label.json = append(label.json, `,"cgroup":`...)
	label.json = appendJSONString(label.json, []byte(c.Path))
	if c.Unit != "" {
		label.json = append(label.json, `,"unit":`...)
		label.json = appendJSONString(label.json, []byte(c.Unit))
	}
	if k := c.Container; k != nil {
		b, _ := json.Marshal(k) // a struct of strings: it cannot fail
		label.json = append(append(label.json, `,"container":`...), b...)
		short := k.ID[:min(12, len(k.ID))]
		switch {
		case k.PodUID != "":
			label.text = tracer.AppendPrintable(label.text, "pod "+k.PodUID+" container "+short)
		case k.Runtime != "":
			label.text = tracer.AppendPrintable(label.text, k.Runtime+" "+short)
		default:
			label.text = tracer.AppendPrintable(label.text, "container "+short)
		}
	}
	if len(label.json) > maxLabelBytes || len(label.text) > maxLabelBytes {
		return cgroupLabel{named: true}
	}
	return label
}

// appendText ends a text line with the owner's container and the
// line's namespace, where they are worth a label.
func (l *Labels) appendText(b []byte, r *tracer.Record) []byte {
	if c := l.cgroup(r.CgroupID, r.TimeNs); c.text != nil {
		b = append(b, "  ["...)
		b = append(b, c.text...)
		b = append(b, ']')
	}
	return l.appendNetNS(b, r.NetNS)
}

// appendNetNS labels a line of another network namespace than the
// watch's: it is not about this host's port.
func (l *Labels) appendNetNS(b []byte, netns uint32) []byte {
	if ns := l.netnsLabel(netns); ns != nil {
		b = append(b, "  ["...)
		b = append(b, ns...)
		b = append(b, ']')
	}
	return b
}

// appendJSON writes the JSON fields of the owner's cgroup that follow
// cgroup_id.
func (l *Labels) appendJSON(b []byte, r *tracer.Record) []byte {
	return append(b, l.cgroup(r.CgroupID, r.TimeNs).json...)
}
