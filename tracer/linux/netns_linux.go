package linux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// Namespace is a network namespace a snapshot answers for.
type Namespace struct {
	// Inode is the namespace's inode number, as sockets report it.
	Inode uint32
	// Name is its `ip netns` name, "" if it has none.
	Name string
	// path opens it (/proc/PID/ns/net or /run/netns/NAME).
	path string
}

// Label names a namespace for a person: its ip-netns name, or its inode.
func (n Namespace) Label() string {
	if n.Name != "" {
		return n.Name
	}
	return "netns:[" + strconv.FormatUint(uint64(n.Inode), 10) + "]"
}

// LabelOf labels the network namespace inode as Label does, for what knows
// only its inode (an event).
func LabelOf(inode uint32) string {
	return Namespace{Inode: inode, Name: namedAs(inode)}.Label()
}

// ownNamespacePath is porttrace's own network namespace's file.
const ownNamespacePath = "/proc/self/ns/net"

// CurrentNamespace is porttrace's own network namespace.
func CurrentNamespace() (Namespace, error) {
	return namespaceAt(ownNamespacePath)
}

// ProcessNamespace is the network namespace of process pid. When that is
// known, it is returned as it is, without a look for its name among `ip
// netns`'s: the daemon asks this for each question it is asked, nearly
// always by a process of its own namespace.
func ProcessNamespace(pid int, known Namespace) (Namespace, error) {
	spec := strconv.Itoa(pid)
	inode, err := inodeAt("/proc/" + spec + "/ns/net")
	if err == nil && inode == known.Inode {
		return known, nil
	}
	return FindNamespace(spec)
}

// inodeAt is the inode number of the namespace file at path.
func inodeAt(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}

// FindNamespace reads --netns: an `ip netns` name, a path such as
// /proc/PID/ns/net, or a process id.
func FindNamespace(spec string) (Namespace, error) {
	path, hint := spec, "see ip netns list"
	switch {
	case spec == "":
		return Namespace{}, errors.New("empty --netns: want an ip netns name, a path or a pid")
	case strings.Contains(spec, "/"):
		hint = "want a namespace file such as /proc/PID/ns/net or /run/netns/NAME"
	case isDigits(spec):
		path, hint = "/proc/"+spec+"/ns/net", "a pid: is process "+spec+" running?"
	default:
		path = filepath.Join(netnsDir, spec)
	}
	ns, err := namespaceAt(path)
	if err != nil {
		return Namespace{}, fmt.Errorf("network namespace %q: %w (%s)", spec, err, hint)
	}
	return ns, nil
}

// AllNamespaces lists every network namespace a process lives in or `ip
// netns` keeps, each once.
func AllNamespaces() ([]Namespace, error) {
	seen := map[uint32]bool{}
	var out []Namespace
	add := func(path string) {
		if ns, err := namespaceAt(path); err == nil && !seen[ns.Inode] {
			seen[ns.Inode] = true
			out = append(out, ns)
		}
	}
	add(ownNamespacePath)
	named, _ := os.ReadDir(netnsDir)
	for _, e := range named {
		add(filepath.Join(netnsDir, e.Name()))
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	for _, e := range procs {
		if isDigits(e.Name()) {
			add("/proc/" + e.Name() + "/ns/net")
		}
	}
	slices.SortFunc(out, func(a, b Namespace) int { return int(a.Inode) - int(b.Inode) })
	return out, nil
}

func namespaceAt(path string) (Namespace, error) {
	inode, err := inodeAt(path)
	if err != nil {
		return Namespace{}, err
	}
	return Namespace{Inode: inode, Name: namedAs(inode), path: path}, nil
}

// namedAs finds the `ip netns` name of a namespace, if it has one.
func namedAs(inode uint32) string {
	named, _ := os.ReadDir(netnsDir)
	for _, e := range named {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(netnsDir, e.Name()), &st) == nil && uint32(st.Ino) == inode {
			return e.Name()
		}
	}
	return ""
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
