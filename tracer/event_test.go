package tracer

import "testing"

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
