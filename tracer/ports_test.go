package tracer

import (
	"slices"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		specs []string
		want  string
		names []PortName
	}{
		{[]string{"8080"}, "8080", nil},
		{[]string{"1"}, "1", nil},
		{[]string{"65535"}, "65535", nil},
		{[]string{"http"}, "80", []PortName{{"http", 80}}},
		{[]string{"80,443,8000-8100"}, "80,443,8000-8100", nil},
		// Repeated flags and duplicates merge into one sorted set.
		{[]string{"8096", "8080"}, "8080,8096", nil},
		{[]string{"8080,8080", "8080"}, "8080", nil},
		{[]string{"8000-8010", "8005-8020,7999"}, "7999-8020", nil},
		{[]string{" 22 , ssh"}, "22", []PortName{{"ssh", 22}}},
		{[]string{"9000-9000"}, "9000", nil},
		{[]string{"https,ssh,81"}, "22,81,443", []PortName{{"https", 443}, {"ssh", 22}}},
	} {
		ports, names, err := ParsePorts(tc.specs...)
		if err != nil {
			t.Errorf("ParsePorts(%q): %v", tc.specs, err)
			continue
		}
		if got := ports.String(); got != tc.want {
			t.Errorf("ParsePorts(%q) = %s, want %s", tc.specs, got, tc.want)
		}
		if !slices.IsSorted(ports) || len(slices.Compact(slices.Clone(ports))) != len(ports) {
			t.Errorf("ParsePorts(%q) = %v: not a sorted set", tc.specs, ports)
		}
		if !slices.Equal(names, tc.names) {
			t.Errorf("ParsePorts(%q) names %v, want %v", tc.specs, names, tc.names)
		}
		// The set's String reads back as the same set.
		again, _, err := ParsePorts(ports.String())
		if err != nil || !slices.Equal(again, ports) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v", ports.String(), again, err, ports)
		}
	}
}

func TestParsePortsRefuses(t *testing.T) {
	for _, tc := range []struct {
		specs []string
		want  string
	}{
		{[]string{""}, "empty port list"},
		{[]string{"  "}, "empty port list"},
		{[]string{"80", ""}, "empty port list"},
		{[]string{"80,"}, `invalid port list "80,": an empty item between commas`},
		{[]string{"0"}, "invalid port 0: must be 1-65535"},
		{[]string{"70000"}, "invalid port 70000: must be 1-65535"},
		{[]string{"99999999999999999999"}, "invalid port 99999999999999999999: must be 1-65535"},
		{[]string{"0-10"}, "invalid port 0: must be 1-65535"},
		{[]string{"10-70000"}, "invalid port 70000: must be 1-65535"},
		{[]string{"90-80"}, "invalid port range 90-80: 90 is above 80"},
		{[]string{"-5"}, `invalid port "-5": not a number in 1-65535 nor a known service name`},
		{[]string{"no-such-service"}, `invalid port "no-such-service": not a number in 1-65535 nor a known service name`},
		{[]string{"80-"}, `invalid port "80-"`},
	} {
		_, _, err := ParsePorts(tc.specs...)
		if err == nil {
			t.Errorf("ParsePorts(%q) took it", tc.specs)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("ParsePorts(%q): %q, want one line starting %q", tc.specs, msg, tc.want)
		}
	}
}

func TestPortsContains(t *testing.T) {
	ports, _, err := ParsePorts("80,443,8000-8100")
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[uint16]bool{80: true, 443: true, 8000: true, 8050: true, 8100: true, 81: false, 7999: false, 8101: false, 0: false} {
		if got := ports.Contains(port); got != want {
			t.Errorf("Contains(%d) = %v, want %v", port, got, want)
		}
	}
	if !(Ports{}).Contains(12345) {
		t.Error("the empty set, every port, does not contain 12345")
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string]uint16{"8080": 8080, "1": 1, "65535": 65535, "http": 80, "ssh": 22} {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "65536", "", "80,443", "8000-8100", "nonesuch"} {
		if got, err := ParsePort(in); err == nil {
			t.Errorf("ParsePort(%q) = %d, want an error", in, got)
		}
	}
}
