package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the porttrace binary the tests build, once.
var (
	binDir   string
	buildBin = sync.OnceValues(func() (string, error) {
		// Static, as the image has it.
		var err error
		if binDir, err = os.MkdirTemp("", "porttrace-deploy-"); err != nil {
			return "", err
		}
		bin := filepath.Join(binDir, "porttrace")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/porttrace/porttrace/cmd/porttrace")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building porttrace: %v\n%s", err, out)
		}
		return bin, nil
	})
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// porttraceBinary is porttrace, built for the tests.
func porttraceBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// needRoot skips a test that needs root, except in CI, where skipping
// would hide that nothing was tested.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI must run the privileged tests as root")
		}
		t.Skip("needs root")
	}
}

// need finds a command the test runs, from a Debian package; CI must
// have it.
func need(t *testing.T, command, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(command)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must have %s: apt-get install %s", command, pkg)
		}
		t.Skipf("no %s: apt-get install %s", command, pkg)
	}
	return path
}

// freePort is a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// listenTCP listens on a free loopback port until the test ends. Plain
// TCP, not Go's default MPTCP: the daemon's starting snapshot names an
// MPTCP listener by its MPTCP socket and its events by the TCP subflow,
// so that its index misses an MPTCP listener that was there before it.
func listenTCP(t *testing.T) (l net.Listener, port int) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds; the bound only catches a hang.
func waitFor(t *testing.T, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(bound); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// outputTo runs cmd with its standard output and error going to a new
// file at path.
func outputTo(t *testing.T, cmd *exec.Cmd, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	t.Cleanup(func() { f.Close() })
}

// porttraceGID is the group porttrace's id in groupFile.
const porttraceGID = 64123

// groupFile is a copy of /etc/group with a group porttrace, for the
// daemon to give its socket to.
func groupFile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/etc/group")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "group")
	if err := os.WriteFile(path, fmt.Appendf(b, "porttrace:x:%d:\n", porttraceGID), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkSocket checks that the daemon's socket is root's and the group
// porttrace's, mode 0660.
func checkSocket(t *testing.T, path string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil || st.Uid != 0 || st.Gid != porttraceGID || st.Mode&0o777 != 0o660 {
		t.Errorf("the socket: %v, uid %d gid %d mode %o; want root's and the group porttrace's (%d), 0660", err, st.Uid, st.Gid, st.Mode&0o777, porttraceGID)
	}
}

// daemon is a porttrace daemon a test started.
type daemon struct {
	cmd    *exec.Cmd
	log    string // its --log-file
	output string // its standard output and error: what comes before the log
	socket string
	exited chan struct{}
}

// startDaemon runs command, which ends in running `porttrace daemon`
// (possibly through unshare and setpriv, which exec it), and waits until
// the daemon serves its API or exits. Its log goes to log.
func startDaemon(t *testing.T, log, socket string, command ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(command[0], command[1:]...), log: log, output: log + ".out", socket: socket, exited: make(chan struct{})}
	outputTo(t, d.cmd, d.output)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.exited
	})
	waitFor(t, "the daemon to serve its API", 30*time.Second, func() bool {
		return strings.Contains(d.logText(), "serving the API on") || d.hasExited()
	})
	return d
}

func (d *daemon) hasExited() bool {
	select {
	case <-d.exited:
		return true
	default:
		return false
	}
}

// logText is what the daemon wrote, before and into its log.
func (d *daemon) logText() string {
	out, _ := os.ReadFile(d.output)
	log, _ := os.ReadFile(d.log)
	return string(out) + string(log)
}

// stop sends SIGTERM and waits for the daemon to exit, returning how long
// that took and its exit status.
func (d *daemon) stop(t *testing.T) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the daemon did not stop on SIGTERM; its log:\n%s", d.logText())
	}
	return time.Since(start), d.cmd.ProcessState.ExitCode()
}

// whoAnswer is what `porttrace who --json` says of a port, in the parts
// the tests check.
type whoAnswer struct {
	Processes []struct {
		PID       uint32 `json:"pid"`
		Name      string `json:"name"`
		User      string `json:"user"`
		Exe       string `json:"exe"`
		Container *struct {
			ID string `json:"id"`
		} `json:"container"`
	} `json:"processes"`
	// FromDaemon: the daemon answered, not a snapshot the client took.
	FromDaemon bool `json:"-"`
}

// who runs `porttrace who PORT --json -v` against a daemon's socket,
// prefixed by wrapper (setpriv, nsenter...) if any.
func who(t *testing.T, socket string, port int, wrapper ...string) whoAnswer {
	t.Helper()
	args := append(wrapper, porttraceBinary(t), "who", fmt.Sprint(port), "--socket", socket, "--json", "-v")
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	var a whoAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatalf("who's JSON: %v\n%s", err, out)
	}
	a.FromDaemon = strings.Contains(stderr.String(), "answered by the daemon")
	if !a.FromDaemon {
		t.Logf("who %d: %s", port, strings.TrimSpace(stderr.String()))
	}
	return a
}
