package proc

import "testing"

func TestManager(t *testing.T) {
	for _, tc := range []struct {
		name       string
		p          Process
		what, stop string
	}{
		{"nothing restarts it", Process{}, "", ""},
		{"systemd unit", Process{Cgroup: Cgroup{Unit: "nginx.service"}}, "systemd unit nginx.service", "systemctl stop nginx.service"},
		{"a session scope is no manager", Process{Cgroup: Cgroup{Unit: "session-2.scope"}}, "", ""},
		{"Windows service", Process{Services: []string{"W3SVC"}}, "Windows service W3SVC", "sc stop W3SVC"},
		{"shared svchost", Process{Services: []string{"Dnscache", "NlaSvc"}}, "Windows services Dnscache, NlaSvc", "sc stop Dnscache, sc stop NlaSvc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if what, stop := tc.p.Manager(); what != tc.what || stop != tc.stop {
				t.Errorf("Manager() = %q, %q; want %q, %q", what, stop, tc.what, tc.stop)
			}
		})
	}
}
