package tracer

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseState(t *testing.T) {
	for _, tc := range []struct {
		name string
		want State
		ok   bool
	}{
		{"ESTABLISHED", StateEstablished, true},
		{"SYN_SENT", StateSynSent, true},
		{"FIN_WAIT2", StateFinWait2, true},
		{"TIME_WAIT", StateTimeWait, true},
		{"CLOSE", StateClose, true},
		{"NEW_SYN_RECV", StateNewSynRecv, true},
		{"UNKNOWN", StateUnknown, true},
		{"established", StateUnknown, false},
		{"CLOSED", StateUnknown, false},
		{"", StateUnknown, false},
	} {
		got, ok := ParseState(tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseState(%q) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	for s := State(0); s < StateCount; s++ {
		if got, ok := ParseState(s.String()); got != s || !ok {
			t.Errorf("ParseState(%v.String()) = %v, %v", s, got, ok)
		}
	}
}

func TestFamilyCarries(t *testing.T) {
	a := netip.MustParseAddr
	both := []Family{FamilyIPv4, FamilyIPv6}
	for _, tc := range []struct {
		name          string
		local, remote netip.Addr
		v6only        bool
		want          []Family
	}{
		{"IPv4 connection", a("127.0.0.1"), a("127.0.0.1"), false, []Family{FamilyIPv4}},
		{"IPv4 listener", a("0.0.0.0"), a("0.0.0.0"), false, []Family{FamilyIPv4}},
		{"IPv4 peer of a dual-stack socket", a("::ffff:127.0.0.1"), a("::ffff:127.0.0.1"), false, []Family{FamilyIPv4}},
		{"IPv6 connection", a("::1"), a("::1"), false, []Family{FamilyIPv6}},
		{"IPv6 loopback listener", a("::1"), a("::"), false, []Family{FamilyIPv6}},
		{"dual-stack wildcard listener", a("::"), a("::"), false, both},
		{"IPV6_V6ONLY wildcard listener", a("::"), a("::"), true, []Family{FamilyIPv6}},
		{"bound to an IPv4-mapped address", a("::ffff:127.0.0.1"), netip.Addr{}, false, []Family{FamilyIPv4}},
		{"bound with no peer yet", a("::"), netip.Addr{}, false, both},
	} {
		for _, f := range both {
			if got, want := f.Carries(tc.local, tc.remote, tc.v6only), slices.Contains(tc.want, f); got != want {
				t.Errorf("%s: %v carries %v: %v, want %v", tc.name, tc.local, f, got, want)
			}
		}
		if !Family(0).Carries(tc.local, tc.remote, tc.v6only) {
			t.Errorf("%s: no family filter drops it", tc.name)
		}
	}
}
