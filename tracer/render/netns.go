package render

import "github.com/porttrace/porttrace/tracer"

// maxNetNSLabels bounds the namespaces whose labels are kept: a host that
// starts and stops containers all day makes a new one for each.
const maxNetNSLabels = 4096

// NetNSLabels labels a watch's text lines from network namespaces other
// than its own, as who labels their sockets. A namespace is named (which
// may take system calls: `ip netns` names live in a folder) the first time
// a line of it is printed, and its label kept: a line of a namespace seen
// before costs a map lookup, and one of the watch's own namespace nothing.
// One goroutine uses it (the Printer's caller).
type NetNSLabels struct {
	own   uint32
	name  func(inode uint32) string
	known map[uint32][]byte
}

// NewNetNSLabels labels the namespaces other than own with name's answer
// for each.
func NewNetNSLabels(own uint32, name func(inode uint32) string) *NetNSLabels {
	return &NetNSLabels{own: own, name: name, known: map[uint32][]byte{}}
}

// label is namespace netns's label, printable, nil for the watch's own or
// an unknown one (0).
func (l *NetNSLabels) label(netns uint32) []byte {
	if l == nil || netns == l.own || netns == 0 {
		return nil
	}
	if b, ok := l.known[netns]; ok {
		return b
	}
	if len(l.known) >= maxNetNSLabels {
		clear(l.known)
	}
	b := tracer.AppendPrintable(nil, l.name(netns))
	l.known[netns] = b
	return b
}
