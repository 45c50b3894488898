package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestUnitVerifies has systemd read porttrace.service (systemd-analyze
// verify, in a root of its own holding the unit, the commands it runs and
// the system's units): no unknown key or bad value, and the capability
// bounding set systemd parses is the one the unit means. systemd ignores
// a capability name it does not know without a word, so the set is read
// back from its dump of the unit.
func TestUnitVerifies(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	root := t.TempDir()
	for _, dir := range []string{"etc/systemd/system", "usr/local/bin", "bin", "lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, "porttrace.service", filepath.Join(root, "etc/systemd/system/porttrace.service"), 0o644)
	// Stand-ins for the commands the unit runs: verify checks that they
	// are executables.
	copyFile(t, "/bin/true", filepath.Join(root, "usr/local/bin/porttrace"), 0o755)
	copyFile(t, "/bin/true", filepath.Join(root, "bin/kill"), 0o755)
	// The targets the unit's default dependencies name.
	if out, err := exec.Command("cp", "-a", "/lib/systemd/system", filepath.Join(root, "lib/systemd")).CombinedOutput(); err != nil {
		t.Fatalf("copying the system's units: %v\n%s", err, out)
	}

	out, err := exec.Command(analyze, "--root", root, "verify", "porttrace.service").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify porttrace.service: %v\n%s", err, out)
	}

	cmd := exec.Command(analyze, "--root", root, "verify", "porttrace.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug")
	out, _ = cmd.CombinedOutput()
	var parsed []string
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "CapabilityBoundingSet:"); ok {
			parsed = strings.Fields(strings.ToUpper(v))
		}
	}
	slices.Sort(parsed)
	if want := unitCapabilities(t); !slices.Equal(parsed, want) {
		t.Errorf("systemd bounds the daemon to %v, the unit says %v", parsed, want)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
