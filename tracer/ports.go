package tracer

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Ports is a set of ports in ascending order, each once. The empty set
// stands for every port.
type Ports []uint16

// PortName is a service name given for a port, such as http for 80.
type PortName struct {
	Name string
	Port uint16
}

// ParsePorts reads port lists and merges them into one set: each spec is a
// comma-separated list of ports (8080), ranges (8000-8100) and service
// names (http, as in /etc/services). names lists the service names given,
// in the order given, so that what is watched can be said back in the
// user's words.
func ParsePorts(specs ...string) (ports Ports, names []PortName, err error) {
	for _, spec := range specs {
		if strings.TrimSpace(spec) == "" {
			return nil, nil, fmt.Errorf("empty port list: give ports such as 8080, 80,443 or 8000-8100")
		}
		for _, item := range strings.Split(spec, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				return nil, nil, fmt.Errorf("invalid port list %q: an empty item between commas", spec)
			}
			lo, hi, name, err := parsePortItem(item)
			if err != nil {
				return nil, nil, err
			}
			if name != "" {
				names = append(names, PortName{Name: name, Port: lo})
			}
			for p := int(lo); p <= int(hi); p++ {
				ports = append(ports, uint16(p))
			}
		}
	}
	slices.Sort(ports)
	return slices.Compact(ports), names, nil
}

// parsePortItem reads one item of a port list: a port, a range, or a
// service name (which may itself contain a dash: http-alt).
func parsePortItem(item string) (lo, hi uint16, name string, err error) {
	if isDigits(item) {
		p, err := portNumber(item)
		return p, p, "", err
	}
	if a, b, ok := strings.Cut(item, "-"); ok && isDigits(a) && isDigits(b) {
		if lo, err = portNumber(a); err != nil {
			return 0, 0, "", err
		}
		if hi, err = portNumber(b); err != nil {
			return 0, 0, "", err
		}
		if lo > hi {
			return 0, 0, "", fmt.Errorf("invalid port range %s: %s is above %s", item, a, b)
		}
		return lo, hi, "", nil
	}
	p, err := ParsePort(item)
	return p, p, item, err
}

// ParsePort reads one port: a number from 1 to 65535 or a service name.
func ParsePort(s string) (uint16, error) {
	if isDigits(s) {
		return portNumber(s)
	}
	n, err := net.LookupPort("tcp", s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q: not a number in 1-65535 nor a known service name", s)
	}
	return uint16(n), nil
}

func portNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port %s: must be 1-65535", s)
	}
	return uint16(n), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Contains says whether the set holds port; every port is in the empty set.
func (p Ports) Contains(port uint16) bool {
	if len(p) == 0 {
		return true
	}
	_, found := slices.BinarySearch(p, port)
	return found
}

// String writes the set as a port list that ParsePorts reads back, runs
// of consecutive ports as ranges: 80,443,8000-8100.
func (p Ports) String() string {
	var b strings.Builder
	for i := 0; i < len(p); {
		j := i
		for j+1 < len(p) && p[j+1] == p[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p[i])))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(p[j])))
		}
		i = j + 1
	}
	return b.String()
}
