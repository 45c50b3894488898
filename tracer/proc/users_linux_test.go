package proc

import "testing"

func TestUserAndGroupNames(t *testing.T) {
	if got := UserName(0); got != "root" {
		t.Errorf("UserName(0) = %q, want root", got)
	}
	if got := UserName(4000000000); got != "" {
		t.Errorf("UserName of a uid no database has = %q, want \"\"", got)
	}
	if got := GroupID("root"); got != 0 {
		t.Errorf(`GroupID("root") = %d, want 0`, got)
	}
	if got := GroupID("no-such-group-porttrace"); got != -1 {
		t.Errorf("GroupID of a group no database has = %d, want -1", got)
	}
}

// TestGetent reads entries the way the fallback for users and groups
// only the name service knows does: through getent, which every glibc
// system has.
func TestGetent(t *testing.T) {
	if f := getent("passwd", "0"); len(f) < 7 || f[0] != "root" || f[2] != "0" {
		t.Errorf("getent passwd 0: %q", f)
	}
	if f := getent("group", "root"); len(f) < 3 || f[2] != "0" {
		t.Errorf("getent group root: %q", f)
	}
	if f := getent("passwd", "4000000000"); f != nil {
		t.Errorf("getent passwd of a missing uid: %q, want nil", f)
	}
}
