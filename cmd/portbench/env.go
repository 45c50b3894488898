//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/porttrace/porttrace/tracer/linux"
)

// bench is one run of the harness: its options, tools and temporary files,
// and the problems found so far.
type bench struct {
	opts      options
	out       io.Writer // the report
	dir       string    // temporary files
	goBin     string
	modDir    string
	porttrace string
	portstorm string
	tcpstates string // "" when unavailable: see skipped
	bpftrace  string
	skipped   map[string]string // peer name: why it is not run
	mounted   bool              // the harness mounted tracefs (and said so)
	canary    net.Listener
	lock      *os.File // held while the harness runs: see lockRun
	nextPort  int
	problems  []string
}

func newBench(ctx context.Context, opts options, out io.Writer) (*bench, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root: the tracers need CAP_BPF and CAP_PERFMON, mounting tracefs and enabling BPF statistics CAP_SYS_ADMIN, installing peers apt-get (run: sudo env \"PATH=$PATH\" go run ./cmd/portbench)")
	}
	lock, err := lockRun(filepath.Join(os.TempDir(), "portbench.lock"))
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "portbench-")
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("creating temporary directory: %w", err)
	}
	b := &bench{opts: opts, out: out, dir: dir, lock: lock, nextPort: opts.basePort, skipped: map[string]string{}}
	if err := b.setup(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *bench) setup(ctx context.Context) error {
	if err := b.build(ctx); err != nil {
		return err
	}
	if err := b.startCanary(); err != nil {
		return err
	}
	b.findPeers(ctx)
	return nil
}

func (b *bench) close() {
	if b.canary != nil {
		b.canary.Close()
	}
	os.RemoveAll(b.dir)
	b.lock.Close()
}

// lockRun takes path's lock, which one harness at a time holds until it
// exits: two at once would slow each other's storms and, counting their
// ports up from the same base, storm each other's idle port.
func lockRun(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the harness's lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another portbench is running (%s is locked): wait for it to end, two at once disturb each other's figures", path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return f, nil
}

// progress says on stderr what the harness is doing: the report on stdout
// stays clean.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "portbench: "+format+"\n", args...)
}

// problem records something broken: the run ends with a non-zero status.
// Timings never are.
func (b *bench) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.problems = append(b.problems, msg)
	b.progress("PROBLEM: %s", msg)
}

// build compiles porttrace and portstorm from this checkout.
func (b *bench) build(ctx context.Context) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go not in PATH (under sudo: sudo env \"PATH=$PATH\" ...): %w", err)
	}
	b.goBin = goBin
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		return fmt.Errorf("finding the porttrace module (run from inside the checkout): %v", err)
	}
	b.modDir = filepath.Dir(strings.TrimSpace(string(gomod)))
	b.porttrace = filepath.Join(b.dir, "porttrace")
	b.portstorm = filepath.Join(b.dir, "portstorm")
	for pkg, bin := range map[string]string{"./cmd/porttrace": b.porttrace, "./cmd/portstorm": b.portstorm} {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, pkg)
		cmd.Dir = b.modDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as the README builds it
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w: %s", pkg, err, out)
		}
	}
	return nil
}

// startCanary listens on a port of its own: connections to it fire every
// attached TCP state probe without touching the ports being measured.
func (b *bench) startCanary() error {
	port, err := b.freePort()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("listening for canary connections: %w", err)
	}
	b.canary = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return nil
}

// freePort hands out loopback ports below the ephemeral range, skipping
// any that something on the machine already listens on.
func (b *bench) freePort() (int, error) {
	for ; b.nextPort < 32768; b.nextPort++ {
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.nextPort)))
		if err == nil {
			l.Close()
			b.nextPort++
			return b.nextPort - 1, nil
		}
	}
	return 0, errors.New("no free port left below 32768: lower --base-port")
}

// findPeers locates tcpstates and bpftrace (and lsof and fuser for the who
// comparison), installing them with apt-get when missing, except in a quick
// run, which skips them instead.
func (b *bench) findPeers(ctx context.Context) {
	b.tcpstates, b.bpftrace = findTcpstates(), lookPath("bpftrace")
	var missing []string
	if b.tcpstates == "" {
		missing = append(missing, "libbpf-tools")
	}
	if b.bpftrace == "" {
		missing = append(missing, "bpftrace")
	}
	// The who contenders; a missing one is skipped, not an error.
	for cmd, pkg := range map[string]string{"lsof": "lsof", "fuser": "psmisc"} {
		if lookPath(cmd) == "" {
			missing = append(missing, pkg)
		}
	}
	if len(missing) > 0 {
		why := "not installed (a --quick run does not install)"
		if !b.opts.quick {
			why = b.install(ctx, missing)
		}
		b.tcpstates, b.bpftrace = findTcpstates(), lookPath("bpftrace")
		if b.tcpstates == "" {
			b.skipped["tcpstates"] = why
		}
		if b.bpftrace == "" {
			b.skipped["bpftrace"] = why
		}
	}
}

// install runs apt-get and returns why the packages are still missing if
// it failed.
func (b *bench) install(ctx context.Context, pkgs []string) string {
	b.progress("installing %s with apt-get", strings.Join(pkgs, " "))
	for _, args := range [][]string{{"update"}, append([]string{"install", "-y"}, pkgs...)} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Sprintf("apt-get %s failed: %v: %s", args[0], err, lastLines(string(out), 2))
		}
	}
	fmt.Fprintf(b.out, "installed with apt-get (after apt-get update): %s\n", strings.Join(pkgs, ", "))
	return "still missing after apt-get install"
}

// findTcpstates: Debian's libbpf-tools puts its tools in /usr/sbin; other
// packagings use a directory of their own.
func findTcpstates() string {
	if p := lookPath("tcpstates"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/sbin/libbpf-tools/tcpstates", "/usr/share/libbpf-tools/tcpstates", "/usr/libexec/libbpf-tools/tcpstates"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// lookPath also searches the sbin directories, which sudo's PATH may lack.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	return ""
}

// enableStats turns on the kernel's BPF run-time statistics (run counts
// and time of every program) until the returned closer is closed; the
// kernel also turns them off if the harness dies.
func enableStats() (io.Closer, error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enabling BPF run-time statistics: %w", err)
	}
	return stats, nil
}

// ensureTracefs mounts tracefs for the peers' classic tracepoints, as
// porttrace does (linux.EnsureTracefs), and leaves it mounted: unmounting
// it could pull it from under another tracer. It is checked before each
// peer starts, in case something else unmounted it meanwhile.
func (b *bench) ensureTracefs() error {
	path, mounted, err := linux.EnsureTracefs()
	if err != nil {
		return err
	}
	if mounted && !b.mounted {
		fmt.Fprintf(b.out, "mounted tracefs at %s (tcpstates and bpftrace attach classic tracepoints through it); left mounted, as porttrace does\n", path)
	}
	b.mounted = b.mounted || mounted
	return nil
}

// describeMachine prints what the numbers depend on.
func (b *bench) describeMachine(ctx context.Context) {
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Fprintf(b.out, "machine: %d CPUs, %s memory, kernel %s, %s\n", runtime.NumCPU(), memTotal(), unix.ByteSliceToString(uts.Release[:]), commandLine(ctx, b.goBin, "version"))
	fmt.Fprintf(b.out, "porttrace: built from this checkout at %s\n", revision(ctx, b.modDir))
	fmt.Fprintf(b.out, "peers: tcpstates %s (libbpf-tools %s), bpftrace %s (%s)\n", orNone(b.tcpstates), packageVersion(ctx, "libbpf-tools"), orNone(b.bpftrace), packageVersion(ctx, "bpftrace"))
	fmt.Fprintf(b.out, "sysctl: net.ipv4.tcp_tw_reuse=%s, net.ipv4.ip_local_port_range=%s, net.ipv4.tcp_max_tw_buckets=%s\n",
		sysctl("net/ipv4/tcp_tw_reuse"), strings.Join(strings.Fields(sysctl("net/ipv4/ip_local_port_range")), "-"), sysctl("net/ipv4/tcp_max_tw_buckets"))
	fmt.Fprintf(b.out, "load average at start: %s\n", loadAverage())
}

// revision is the checkout's commit, marked -dirty when porttrace was
// built with uncommitted changes in it.
func revision(ctx context.Context, dir string) string {
	return commandLine(ctx, "git", "-C", dir, "describe", "--always", "--dirty")
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	kib, err := procKiB(string(data), "MemTotal")
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
}

// commandLine is the first line a command prints, or "unknown".
func commandLine(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func packageVersion(ctx context.Context, pkg string) string {
	return commandLine(ctx, "dpkg-query", "-W", "-f", "${Version}", pkg)
}

func sysctl(name string) string {
	data, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

func loadAverage() string {
	data, _ := os.ReadFile("/proc/loadavg")
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

func orNone(path string) string {
	if path == "" {
		return "(none)"
	}
	return path
}
