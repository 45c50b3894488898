package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/free"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/why"
)

// How free carries out a plan is the platform's (free_linux.go,
// free_windows.go): freeAbout, timeoutUsage and timeWaitUsage word it for
// --help; descendants, stopProcess and destroyTimeWait act; serverBind is
// the bind a server makes, which trialBind tries; isTerminal guards the
// question.

// freePollInterval is how often free looks whether the port came free
// after stopping its holders.
const freePollInterval = 50 * time.Millisecond

// freeCommand stops what holds a port, as taskkill /T or kill $(lsof -t)
// would, but from a snapshot taken now, never touching a process that took
// a stopped one's pid, and says when the port is free: exit 0 when a
// server's bind succeeds afterwards, 1 when it does not, 2 for bad usage.
func freeCommand() *command {
	fs := newFlagSet("porttrace free")
	var o freeOptions
	fs.BoolVar(&o.tree, "tree", false, "also stop every descendant of the processes stopped (taskkill /T)")
	fs.BoolVarP(&o.yes, "yes", "y", false, "do not ask (scripts)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "say what would be stopped, and stop nothing")
	fs.BoolVar(&o.timeWait, "time-wait", false, timeWaitUsage)
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, timeoutUsage)
	return &command{
		snapshot: true,
		doc: &clidoc.Command{
			Name:        "free",
			Args:        "PORT",
			Summary:     "stop what holds PORT and wait until it can be bound",
			Description: freeAbout + "\nIt asks first on a terminal; exit status 0 when the port is free afterwards.",
			Flags:       fs,
		},
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 1 {
				return usageError("free takes one port, e.g. porttrace free 8080")
			}
			if o.timeout <= 0 {
				return usageError("invalid --timeout %v: must be positive", o.timeout)
			}
			port, err := tracer.ParsePort(args[0])
			if err != nil {
				return usageError("%v", err)
			}
			return freePort(ctx, port, o, os.Stdin, stdout)
		},
	}
}

// freeOptions are free's flags.
type freeOptions struct {
	tree, yes, dryRun, timeWait bool
	timeout                     time.Duration
}

func freePort(ctx context.Context, port uint16, o freeOptions, stdin io.Reader, stdout io.Writer) error {
	// Only a snapshot taken now: never a cached or historical owner.
	report, err := snapshotPort(port)
	if err != nil {
		return err
	}
	plan := free.Make(report)
	writePlan(stdout, &plan, o.tree)
	if o.dryRun {
		// As free would end: 1 while a process holds the port, or
		// while a server's bind, which free waits for, fails (sockets
		// no process holds; TIME_WAIT ones let SO_REUSEADDR through).
		if len(plan.Targets) > 0 {
			return exitError{code: 1}
		}
		blocked, err := bindBlocked(port)
		if err != nil {
			return err
		}
		if blocked != "" {
			return exitError{code: 1, msg: blocked}
		}
		return nil
	}
	if len(plan.Targets) > 0 && !o.yes {
		ok, err := confirm(stdin, stdout, &plan)
		if err != nil {
			return err
		}
		if !ok {
			return exitError{code: 1, msg: "nothing stopped"}
		}
	}
	for _, target := range plan.Targets {
		var below []proc.Identity
		if o.tree {
			if below, err = descendants(target.Identity); err != nil {
				fmt.Fprintf(stdout, "%s %d: %v\n", tracer.Printable(target.Name), target.PID, err)
			}
		}
		stopOne(ctx, stdout, target.Identity, target.Name, o.timeout)
		for _, id := range below {
			stopOne(ctx, stdout, id, "", o.timeout)
		}
	}
	if o.timeWait {
		destroyTimeWait(stdout, port)
	}
	return waitFree(ctx, stdout, port, o.timeout)
}

func writePlan(w io.Writer, plan *free.Plan, tree bool) {
	defer writeTimeWait(w, plan)
	if len(plan.Targets) == 0 {
		fmt.Fprintf(w, "port %d: no process holds it\n", plan.Port)
		return
	}
	processes := "processes"
	if len(plan.Holders) == 1 {
		processes = "process"
	}
	fmt.Fprintf(w, "port %d: held by %d %s; stopping would end:\n", plan.Port, len(plan.Holders), processes)
	for _, t := range plan.Targets {
		fmt.Fprintf(w, "  %s %d", tracer.Printable(t.Name), t.PID)
		if t.User != "" {
			fmt.Fprintf(w, "  user %s", tracer.Printable(t.User))
		}
		if t.Cmdline != "" {
			fmt.Fprintf(w, "  %s", t.CmdlineText(60))
		}
		fmt.Fprintln(w)
		var under []string
		for _, h := range plan.Holders {
			if h.PID != t.PID && isBelow(h, t.PID) {
				under = append(under, fmt.Sprintf("%s %d", tracer.Printable(h.Name), h.PID))
			}
		}
		if len(under) > 0 {
			fmt.Fprintf(w, "    and the holders it started: %s\n", strings.Join(under, ", "))
		}
		if what, stop := t.Manager(); what != "" {
			fmt.Fprintf(w, "    managed by %s: it may start it again; to stop it for good: %s\n", tracer.Printable(what), tracer.Printable(stop))
		}
	}
	if tree {
		fmt.Fprintln(w, "  --tree: and every process below them")
	}
}

// writeTimeWait says what stopping processes leaves: the port's sockets
// no process holds, which --time-wait destroys.
func writeTimeWait(w io.Writer, plan *free.Plan) {
	if plan.TimeWait > 0 {
		fmt.Fprintf(w, "  and %d socket(s) no process holds (TIME_WAIT, or still closing): they keep a bind without SO_REUSEADDR from succeeding until they go; --time-wait destroys them\n", plan.TimeWait)
	}
}

func isBelow(p *proc.Process, pid uint32) bool {
	for _, a := range p.Ancestors {
		if a.PID == pid {
			return true
		}
	}
	return false
}

// confirm asks on a terminal; elsewhere it refuses: a script must say --yes.
func confirm(stdin io.Reader, stdout io.Writer, plan *free.Plan) (bool, error) {
	f, ok := stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return false, usageError("free stops processes only when asked on a terminal or given --yes (--dry-run shows what it would stop)")
	}
	fmt.Fprintf(stdout, "stop %d process(es)? [y/N] ", len(plan.Targets))
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes", nil
}

func stopOne(ctx context.Context, w io.Writer, id proc.Identity, name string, timeout time.Duration) {
	label := fmt.Sprintf("pid %d", id.PID)
	if name != "" {
		label = fmt.Sprintf("%s %d", tracer.Printable(name), id.PID)
	}
	outcome, err := stopProcess(ctx, id, timeout)
	if err != nil {
		fmt.Fprintf(w, "%s: %v\n", label, err)
		return
	}
	fmt.Fprintf(w, "%s: %s\n", label, outcome)
}

// waitFree waits until a server's bind (0.0.0.0 and [::], as serverBind
// says) of the port succeeds, and says what still blocks it if it does
// not.
func waitFree(ctx context.Context, w io.Writer, port uint16, timeout time.Duration) error {
	with, whyFlags := "", ""
	if serverBind.ReuseAddr {
		with, whyFlags = " with SO_REUSEADDR", " --reuseaddr"
	}
	deadline := time.Now().Add(timeout)
	for {
		blocked, err := bindBlocked(port)
		if err != nil {
			return err
		}
		if blocked == "" {
			fmt.Fprintf(w, "port %d is free: bind()%s succeeds now\n", port, with)
			if serverBind.ReuseAddr {
				if strict, _ := trialBind(why.Request{Port: port}); strict != "" {
					fmt.Fprintf(w, "(without SO_REUSEADDR bind() still fails with %s: porttrace why %d says what blocks it)\n", strict, port)
				}
			}
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return exitError{code: 1, msg: fmt.Sprintf("port %d is still not free: %s (porttrace why %d%s says why)", port, blocked, port, whyFlags)}
		}
		time.Sleep(freePollInterval)
	}
}

// bindBlocked is "" when a server could bind the port now over TCP and
// UDP, else the error of the bind that failed.
func bindBlocked(port uint16) (string, error) {
	for _, udp := range []bool{false, true} {
		req := serverBind
		req.Port, req.UDP = port, udp
		errno, err := trialBind(req)
		if err != nil || errno != "" {
			proto := "TCP"
			if udp {
				proto = "UDP"
			}
			return fmt.Sprintf("bind(0.0.0.0:%d) over %s fails with %s", port, proto, errno), err
		}
	}
	return "", nil
}
