package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCapabilities runs the daemon as porttrace.service does (root,
// bounded to the unit's capabilities, no new privileges, with the unit's
// arguments) and then without each capability, to show that the set is
// enough and that every capability in it is needed, for the reason the
// README's table gives. The daemon is asked about a listener of another
// user (nobody) and about one in another network namespace; tracefs is
// unmounted in the daemon's mount namespace, so that it mounts its own;
// the group porttrace exists there, so that the socket is given to it.
func TestCapabilities(t *testing.T) {
	needRoot(t)
	setpriv := need(t, "setpriv", "util-linux")
	need(t, "unshare", "util-linux")
	need(t, "ip", "iproute2")
	busybox := need(t, "busybox", "busybox-static")
	bin := porttraceBinary(t)
	caps := unitCapabilities(t)
	args := unitDaemonArgs(t)

	// The group porttrace, in a copy of /etc/group the daemon's mount
	// namespace puts in place.
	groups := groupFile(t)

	// A listener of nobody's, and one in a network namespace of its own.
	nobodysPort := freePort(t)
	startListener(t, nil, nobodysPort, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", busybox, "httpd", "-f", "-p", fmt.Sprintf("127.0.0.1:%d", nobodysPort))
	netns := fmt.Sprintf("porttrace-deploy-%d", os.Getpid())
	run(t, "ip", "netns", "add", netns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", netns).Run() })
	run(t, "ip", "-n", netns, "link", "set", "lo", "up")
	inNetns := []string{"ip", "netns", "exec", netns}
	const netnsPort = 8080
	startListener(t, inNetns, netnsPort, append(inNetns, busybox, "httpd", "-f", "-p", fmt.Sprintf("127.0.0.1:%d", netnsPort))...)

	// bounded is a command run as root with only caps: what the unit's
	// CapabilityBoundingSet and NoNewPrivileges make of the daemon.
	bounded := func(caps []string, command ...string) []string {
		set := "-all"
		for _, c := range caps {
			set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
		return append([]string{setpriv, "--reuid=0", "--regid=0", "--clear-groups", "--nnp", "--inh-caps=-all", "--bounding-set=" + set}, command...)
	}
	start := func(t *testing.T, caps []string) *daemon {
		dir := t.TempDir()
		log, socket := filepath.Join(dir, "log"), filepath.Join(dir, "run", "porttrace.sock")
		daemonArgs := append(slices.Clone(args), "--socket", socket, "--data-dir", filepath.Join(dir, "history"), "--metrics-address", "127.0.0.1:0", "--log-file", log)
		// In a mount namespace of its own: the group file in place,
		// tracefs unmounted (where it is mounted at all).
		const script = `mount --bind "$0" /etc/group || exit; umount /sys/kernel/tracing /sys/kernel/debug/tracing 2>/dev/null; exec "$@"`
		command := append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, groups}, bounded(caps, append([]string{bin, "daemon"}, daemonArgs...)...)...)
		return startDaemon(t, log, socket, command...)
	}
	without := func(drop string) []string {
		return slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == drop })
	}
	// Whether the kernel shows its addresses in /proc/kallsyms to a
	// process with only caps: to whoever has CAP_SYSLOG, or to everyone
	// where kptr_restrict is 0 and perf_event_paranoid at most 1; to no
	// one where kptr_restrict is 2.
	addressesShown := func(caps []string) bool {
		read := bounded(caps, "head", "-c", "16", "/proc/kallsyms")
		out, err := exec.Command(read[0], read[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(read, " "), err)
		}
		return strings.Trim(string(out), "0") != ""
	}
	missingHooks := func(d *daemon) []string {
		var hooks []string
		for _, m := range regexp.MustCompile(`(\w+) hook not attached`).FindAllStringSubmatch(d.logText(), -1) {
			if !slices.Contains(hooks, m[1]) {
				hooks = append(hooks, m[1])
			}
		}
		return hooks
	}
	var unattachable []string
	if !addressesShown(caps) {
		unattachable = []string{"timewait"}
	}

	t.Run("the unit's", func(t *testing.T) {
		d := start(t, caps)
		if d.hasExited() {
			t.Fatalf("the daemon exited:\n%s", d.logText())
		}
		if missing := missingHooks(d); !slices.Equal(missing, unattachable) {
			t.Errorf("hooks not attached: %v, want %v; log:\n%s", missing, unattachable, d.logText())
		}
		checkSocket(t, d.socket)
		a := who(t, d.socket, nobodysPort)
		if !a.FromDaemon || len(a.Processes) != 1 || a.Processes[0].User != "nobody" || a.Processes[0].Exe == "" {
			t.Errorf("who %d (nobody's busybox): from the daemon %v, %+v; want nobody's process and its executable", nobodysPort, a.FromDaemon, a.Processes)
		}
		if a := who(t, d.socket, netnsPort, inNetns...); !a.FromDaemon || len(a.Processes) != 1 || a.Processes[0].Name != "busybox" {
			t.Errorf("who %d asked in %s: from the daemon %v, %+v; want the namespace's busybox", netnsPort, netns, a.FromDaemon, a.Processes)
		}
		// logrotate moves the log, then asks for a new one.
		if err := os.Rename(d.log, d.log+".1"); err != nil {
			t.Fatal(err)
		}
		d.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, "SIGHUP to reopen the log", 10*time.Second, func() bool {
			_, err := os.Stat(d.log)
			return err == nil
		})
		took, code := d.stop(t)
		t.Logf("SIGTERM stopped the daemon in %v", took.Round(time.Millisecond))
		if code != 0 {
			t.Errorf("SIGTERM: exit status %d, want 0", code)
		}
	})

	t.Run("without CAP_CHOWN", func(t *testing.T) {
		d := start(t, without("CAP_CHOWN"))
		wantExit(t, d, regexp.MustCompile(`giving \S+ to root: chown \S+: operation not permitted`))
	})

	// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON...
	t.Run("without CAP_SYS_ADMIN", func(t *testing.T) {
		d := start(t, without("CAP_SYS_ADMIN"))
		wantExit(t, d, regexp.MustCompile(`needs CAP_BPF and CAP_PERFMON`))
	})
	// ...which do not enter other network namespaces, nor mount tracefs.
	t.Run("without CAP_SYS_ADMIN, with CAP_BPF and CAP_PERFMON", func(t *testing.T) {
		d := start(t, append(without("CAP_SYS_ADMIN"), "CAP_BPF", "CAP_PERFMON"))
		wantExit(t, d, regexp.MustCompile(`the starting snapshot: opening sock_diag in \S+: setns: operation not permitted`))
	})

	t.Run("without CAP_SYS_PTRACE", func(t *testing.T) {
		lacking := without("CAP_SYS_PTRACE")
		d := start(t, lacking)
		if d.hasExited() {
			t.Fatalf("the daemon exited:\n%s", d.logText())
		}
		// Asked by a process with no more than its capabilities, the
		// daemon answers, without another user's executable.
		if a := who(t, d.socket, nobodysPort, bounded(lacking)...); !a.FromDaemon || len(a.Processes) != 1 || a.Processes[0].Exe != "" {
			t.Errorf("who %d: from the daemon %v, %+v; want nobody's process without its executable", nobodysPort, a.FromDaemon, a.Processes)
		}
		// Asked by root, it cannot open the asker's network namespace.
		if a := who(t, d.socket, nobodysPort); a.FromDaemon {
			t.Error("the daemon answered root without CAP_SYS_PTRACE")
		}
	})

	t.Run("without CAP_SYSLOG", func(t *testing.T) {
		d := start(t, without("CAP_SYSLOG"))
		if d.hasExited() {
			t.Fatalf("the daemon exited:\n%s", d.logText())
		}
		var want []string
		if !addressesShown(without("CAP_SYSLOG")) {
			want = []string{"timewait"}
		}
		if missing := missingHooks(d); !slices.Equal(missing, want) {
			t.Errorf("hooks not attached: %v, want %v; log:\n%s", missing, want, d.logText())
		}
	})
}

// unitDaemonArgs are the arguments porttrace.service's ExecStart gives
// the daemon.
func unitDaemonArgs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("porttrace.service")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart="); ok {
			f := strings.Fields(v)
			if len(f) < 2 || filepath.Base(f[0]) != "porttrace" || f[1] != "daemon" {
				t.Fatalf("ExecStart=%s: want porttrace daemon", v)
			}
			return f[2:]
		}
	}
	t.Fatal("porttrace.service has no ExecStart")
	return nil
}

// wantExit checks that the daemon exited with an error that says why.
func wantExit(t *testing.T, d *daemon, why *regexp.Regexp) {
	t.Helper()
	<-d.exited
	if code := d.cmd.ProcessState.ExitCode(); code == 0 || !why.MatchString(d.logText()) {
		t.Errorf("exit status %d and\n%s\nwant a failure saying %q", code, d.logText(), why)
	}
}

// startListener runs a command that listens on a loopback port (in the
// network namespace wrapper enters), until the test ends.
func startListener(t *testing.T, wrapper []string, port int, command ...string) {
	t.Helper()
	cmd := exec.Command(command[0], command[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	waitListening(t, wrapper, port)
}

// waitListening waits until something listens on a loopback port, in the
// network namespace wrapper enters.
func waitListening(t *testing.T, wrapper []string, port int) {
	t.Helper()
	// /proc/net/tcp: "sl local_address rem_address st ...", hex, 0A listening.
	want := fmt.Sprintf(":%04X 00000000:0000 0A", port)
	waitFor(t, fmt.Sprintf("a listener on port %d", port), 10*time.Second, func() bool {
		cat := append(slices.Clone(wrapper), "cat", "/proc/net/tcp")
		out, _ := exec.Command(cat[0], cat[1:]...).Output()
		return strings.Contains(string(out), want)
	})
}

func run(t *testing.T, command ...string) {
	t.Helper()
	if out, err := exec.Command(command[0], command[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(command, " "), err, out)
	}
}
