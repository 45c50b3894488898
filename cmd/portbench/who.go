//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// whoCommand answers "who owns this port?".
type whoCommand struct {
	name string
	argv []string
	// pids reads the processes its answer names from what it printed on
	// stdout.
	pids func(stdout string) []int
	core bool // porttrace's own: a wrong answer is a problem
	// daemon: answered by the daemon, as it must say on stderr;
	// declined: the daemon declined (a busy port) and a snapshot answered.
	daemon, declined bool
	// noIsAnswer: exit status 1 answers "no" (why: the bind would fail;
	// free --dry-run: something holds the port),
	// which on a held port is the right answer, not a failure.
	noIsAnswer bool
}

// whoResult is a command's timings, or why it was not run.
type whoResult struct {
	whoCommand
	seconds []float64
	right   bool // every answer named a process holding the port
	skipped string
	err     error
}

// whoCommands are the contenders for port: the usual tools, as the
// project's notes measured them, and porttrace's own: the snapshot it
// takes without a daemon, and the answer of the harness's daemon.
func (b *bench) whoCommands(ctx context.Context, port int) []whoResult {
	p := strconv.Itoa(port)
	// A socket nobody serves: the one-shot asks no daemon running here.
	noDaemon := filepath.Join(b.dir, "no-daemon.sock")
	cmds := []whoResult{
		{whoCommand: whoCommand{name: "ss -ltnp", argv: []string{"ss", "-ltnp", "sport = :" + p}, pids: ssPIDs}},
		{whoCommand: whoCommand{name: "lsof -iTCP -sTCP:LISTEN", argv: []string{"lsof", "-iTCP:" + p, "-sTCP:LISTEN"}, pids: lsofPIDs}},
		{whoCommand: whoCommand{name: "fuser", argv: []string{"fuser", p + "/tcp"}, pids: fuserPIDs}},
		{whoCommand: whoCommand{name: "porttrace who (snapshot)", argv: []string{b.porttrace, "who", "--socket", noDaemon, p}, pids: porttraceWhoPIDs, core: true}},
		{whoCommand: b.daemonDeclines(port)},
		{whoCommand: whoCommand{name: "porttrace why", argv: []string{b.porttrace, "why", p}, pids: porttraceHeldByPIDs, core: true, noIsAnswer: true}},
		{whoCommand: whoCommand{name: "porttrace free --dry-run", argv: []string{b.porttrace, "free", "--dry-run", p}, pids: porttraceFreePIDs, core: true, noIsAnswer: true}},
	}
	for i := range cmds {
		cmds[i].skipped = b.whyNot(ctx, cmds[i].whoCommand)
	}
	return cmds
}

// daemonDeclines is porttrace who asking the harness's daemon about a
// busy port: the daemon declines, and who takes its own snapshot.
func (b *bench) daemonDeclines(port int) whoCommand {
	c := b.daemonWho(port)
	c.name, c.daemon, c.declined = "porttrace who (daemon declines, snapshot)", false, true
	return c
}

// daemonWho is porttrace who answered by the harness's daemon; --verbose
// says on stderr which answered, which timeWhoOf checks.
func (b *bench) daemonWho(port int) whoCommand {
	return whoCommand{name: "porttrace who (daemon)", argv: []string{b.porttrace, "who", "--verbose", "--socket", b.daemonSocket(), strconv.Itoa(port)},
		pids: porttraceWhoPIDs, core: true, daemon: true}
}

// whyNot says why a command cannot run here; "" when it can.
func (b *bench) whyNot(ctx context.Context, c whoCommand) string {
	if c.argv[0] == b.porttrace {
		if exec.CommandContext(ctx, b.porttrace, "who", "--help").Run() != nil {
			return "not built yet, skipped"
		}
		return ""
	}
	if lookPath(c.argv[0]) == "" {
		return "not installed, skipped"
	}
	return ""
}

// timeWho times each command, alternating them, while the holders (pids)
// hold the port.
func (b *bench) timeWho(ctx context.Context, port int, pids []int) []whoResult {
	results := b.whoCommands(ctx, port)
	for i := range results {
		results[i].right = true
	}
	for range b.opts.whoRepeats {
		for i := range results {
			b.timeOnce(ctx, &results[i], pids)
		}
	}
	for _, r := range results {
		b.checkWho(r, port, pids)
	}
	return results
}

// aloneRepeats is how many times more often than the alternated commands
// timeWhoOf times its command: it takes a few milliseconds, where the
// machine's noise moves a median of five by one or two.
const aloneRepeats = 10

// timeWhoOf times one command about port alone, named name.
func (b *bench) timeWhoOf(ctx context.Context, name string, c whoCommand, port int, pids []int) whoResult {
	r := whoResult{whoCommand: c, right: true}
	r.name = name
	for range aloneRepeats * b.opts.whoRepeats {
		b.timeOnce(ctx, &r, pids)
	}
	b.checkWho(r, port, pids)
	return r
}

// timeOnce runs r's command once, unless it was skipped or failed.
func (b *bench) timeOnce(ctx context.Context, r *whoResult, pids []int) {
	if r.skipped != "" || r.err != nil {
		return
	}
	secs, out, stderr, err := timeCommand(ctx, r.argv, r.noIsAnswer)
	if err == nil && r.daemon && !strings.Contains(stderr, "answered by the daemon") {
		err = fmt.Errorf("not answered by the daemon: %s", lastLines(stderr, 2))
	}
	if err == nil && r.declined && !strings.Contains(stderr, "a snapshot answers sooner") {
		err = fmt.Errorf("the daemon did not decline the busy port: %s", lastLines(stderr, 2))
	}
	if err != nil {
		r.err = err
		if r.core {
			b.problem("%s: %v", r.name, err)
		}
		return
	}
	r.seconds = append(r.seconds, secs)
	r.right = r.right && namesAny(r.pids(out), pids)
}

// checkWho flags a porttrace answer that named none of the holders.
func (b *bench) checkWho(r whoResult, port int, pids []int) {
	if r.core && r.err == nil && r.skipped == "" && !r.right {
		b.problem("%s: the answer names none of the processes holding port %d (%v)", r.name, port, pids)
	}
}

// namesAny reports whether any of named is one of pids.
func namesAny(named, pids []int) bool {
	return slices.ContainsFunc(named, func(p int) bool { return slices.Contains(pids, p) })
}

// The pids each command's answer names: read from where the command puts
// them, not from any number in its output, which also holds ports, file
// descriptors and the peers' ports (in the pid range) that would match a
// pid by chance.

// ssPID is ss -p's users:(("name",pid=N,fd=F),...).
var ssPID = regexp.MustCompile(`\bpid=(\d+)`)

func ssPIDs(stdout string) []int {
	var pids []int
	for _, m := range ssPID.FindAllStringSubmatch(stdout, -1) {
		pids = append(pids, atoiOr0(m[1]))
	}
	return pids
}

// lsofPIDs reads lsof's second column, PID, under its header.
func lsofPIDs(stdout string) []int {
	var pids []int
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] != "COMMAND" {
			if pid, err := strconv.Atoi(f[1]); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// fuserPIDs: fuser prints only pids on stdout, the port and access
// letters on stderr.
func fuserPIDs(stdout string) []int {
	var pids []int
	for _, f := range strings.Fields(stdout) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// porttraceWhoPID is a process's first line in porttrace who's report, the
// only lines that start with a lower-case name: "NAME PID  user U ...".
var porttraceWhoPID = regexp.MustCompile(`(?m)^[^ A-Z\n].* (\d+)(?:  |$)`)

func porttraceWhoPIDs(stdout string) []int {
	var pids []int
	for _, m := range porttraceWhoPID.FindAllStringSubmatch(stdout, -1) {
		if !strings.HasPrefix(m[0], "port ") {
			pids = append(pids, atoiOr0(m[1]))
		}
	}
	return pids
}

// porttraceHeldBy is why's naming of a blocker's holder: "held by NAME PID".
var porttraceHeldBy = regexp.MustCompile(`held by .* (\d+)(?: \(user [^)]*\))?\n`)

func porttraceHeldByPIDs(stdout string) []int {
	var pids []int
	for _, m := range porttraceHeldBy.FindAllStringSubmatch(stdout, -1) {
		pids = append(pids, atoiOr0(m[1]))
	}
	return pids
}

// porttraceFreeTarget is a process free --dry-run would stop, "  NAME PID
// user U ...", and porttraceFreeStarted the holders it started, "    and
// the holders it started: NAME PID, NAME PID".
var (
	porttraceFreeTarget  = regexp.MustCompile(`(?m)^  [^ ].*? (\d+)(?:  |$)`)
	porttraceFreeStarted = regexp.MustCompile(`(?m)^    and the holders it started: (.*)$`)
	lastNumber           = regexp.MustCompile(` (\d+)$`)
)

func porttraceFreePIDs(stdout string) []int {
	var pids []int
	for _, m := range porttraceFreeTarget.FindAllStringSubmatch(stdout, -1) {
		pids = append(pids, atoiOr0(m[1]))
	}
	for _, m := range porttraceFreeStarted.FindAllStringSubmatch(stdout, -1) {
		for _, holder := range strings.Split(m[1], ", ") {
			if n := lastNumber.FindStringSubmatch(holder); n != nil {
				pids = append(pids, atoiOr0(n[1]))
			}
		}
	}
	return pids
}

// atoiOr0 reads digits a regexp matched.
func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// timeCommand runs argv to completion and returns its wall time and what
// it printed on stdout and stderr.
func timeCommand(ctx context.Context, argv []string, noIsAnswer bool) (float64, string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	secs := time.Since(start).Seconds()
	var exit *exec.ExitError
	if noIsAnswer && errors.As(err, &exit) && exit.ExitCode() == 1 {
		err = nil
	}
	if err != nil {
		return 0, "", "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, lastLines(stderr.String()+stdout.String(), 2))
	}
	return secs, stdout.String(), stderr.String(), nil
}

func (b *bench) printWho(results []whoResult) {
	fmt.Fprintf(b.out, "\n## Who owns the port, asked while those connections were held (median of %d, commands alternated; a port with 1 listener: median of %d)\n\n",
		b.opts.whoRepeats, aloneRepeats*b.opts.whoRepeats)
	base := 0.0
	if i := slices.IndexFunc(results, func(r whoResult) bool { return r.name == "ss -ltnp" && len(r.seconds) > 0 }); i >= 0 {
		base = median(results[i].seconds)
	}
	var rows [][]string
	for _, r := range results {
		rows = append(rows, r.row(base))
	}
	printTable(b.out, []string{"command", "seconds", "vs ss -ltnp", "names a holder"}, rows)
}

func (r whoResult) row(base float64) []string {
	switch {
	case r.skipped != "":
		return []string{r.name, r.skipped}
	case len(r.seconds) == 0:
		return []string{r.name, "failed: " + oneLine(r.err)}
	}
	secs := median(r.seconds)
	ratio := "-"
	if base > 0 {
		ratio = fmt.Sprintf("%.2f", secs/base)
	}
	return []string{r.name, fmt.Sprintf("%.4f", secs), ratio, yesNo(r.right)}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
