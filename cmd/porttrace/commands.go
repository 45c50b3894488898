package main

import (
	"context"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/porttrace/porttrace/cmd/internal/clidoc"
	"github.com/porttrace/porttrace/tracer"
)

// cli is porttrace's command line: its commands and their flags, which the
// help, the shell completions and the man page are written from.
type cli struct {
	program  *clidoc.Program
	commands []*command
}

// command is a command's description and flags, and what it does once its
// flags are parsed; args are its positional arguments.
type command struct {
	doc *clidoc.Command
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	// snapshot says the command answers once from a snapshot of the
	// kernel's sockets, a burst of allocation in a process that lives well
	// under a second (see snapshotMemoryLimit).
	snapshot bool
	// answers says the command prints one answer and exits: its standard
	// output is buffered and written once at the end, not a line at a
	// time (who --all wrote 40,000 times for a busy port).
	answers bool
	// traces says the command's work is the event loop: a watch, top, the
	// daemon (see oneProcessor).
	traces bool
}

// snapshotMemoryLimit is where the commands that answer from a snapshot
// start collecting garbage: never before. A busy port's 40,000 sockets
// grow the heap to some 50 MB in a tenth of a second, and the process
// exits soon after; collecting on the way (even at 400%, twice) cost who
// a tenth of its time, the mark running beside the kernel's walks on the
// same two cores. A port with hundreds of thousands of sockets collects
// near the limit instead of growing past it.
const snapshotMemoryLimit = 256 << 20

// oneProcessor runs a tracing command on one processor (GOMAXPROCS=1)
// unless the user chose otherwise. Its work is one goroutine, the event
// loop, which hands lines to the output's, and answers the API's rare
// questions; on two processors a handoff often woke a parked thread. On
// this project's 2-core machines, under a loopback storm, a watch took
// 17-19 us of CPU a connection on two processors and 15-18 on one, with
// three quarters of the context switches; the daemon spent 790 us of CPU
// and 16 context switches on a who on two, 440 us and 5.5 on one, and
// answered in 0.55 ms instead of 0.8. A question waits at most the
// scheduler's 10 ms slice for a busy loop's turn.
func oneProcessor() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

func newCLI() *cli {
	c := &cli{program: &clidoc.Program{
		Name:    "porttrace",
		Summary: "who owns a port, and what happens to its connections",
		Description: `porttrace watches every TCP state transition on a port live (handshakes,
teardowns, FIN_WAIT2 and TIME_WAIT included) and attributes each to the
process that owns the socket, with the time spent in the state it left.
Binds are shown with their errors (EADDRINUSE), and connects that fail
with theirs (ECONNREFUSED, ETIMEDOUT). The column header goes to
standard output, a first line saying what is watched and, at the end, a
summary of what was shown and lost go to standard error; with --json, the
summary is also the last JSON object on standard output.

Lines come out in time order, tens of milliseconds after what they
report; the server side of a connection waits until it is accepted (up to
a second), and the lines after it with it. --state,
--event, --failed, --comm, --pid and --container keep only the lines
asked for; --connections prints one line per connection when it ends
instead of its transitions.

porttrace who PORT answers once which processes hold a port, and which
sockets on it no process holds any more (TIME_WAIT), naming their owner
when a running watch saw them.

A watch stops at Ctrl-C, SIGTERM, SIGHUP, SIGQUIT or SIGPIPE, or after
--duration, printing its summary. It stops at once when its output cannot
be written; when its reader has gone (porttrace | head) it stops quietly,
with exit status 0.`,
		Sections: []clidoc.Section{
			{Title: "Exit status", Items: []clidoc.Item{
				{Tag: "0", Text: "success; a watch stopped by a signal, --duration or its reader going away"},
				{Tag: "1", Text: "a missing privilege or kernel feature, an output error, or (who) no process holds the port"},
				{Tag: "2", Text: "bad usage: one line says what is wrong"},
			}},
			{Title: "Privileges", Text: `Root, or CAP_BPF and CAP_PERFMON to start. Without root, the accept and
bind hooks need read access to tracefs (CAP_DAC_READ_SEARCH), mounting
tracefs CAP_SYS_ADMIN, and the TIME_WAIT hook's timer forms CAP_SYSLOG
(kernel addresses in /proc/kallsyms). A hook porttrace cannot attach is
reported in one line naming what is missing and what the watch will not
show.`},
			{Title: "Files", Items: []clidoc.Item{
				{Tag: "/run/porttrace/watch-PID.sock", Text: "the API of a running watch, which porttrace who asks for the owners of TIME_WAIT sockets"},
				{Tag: "/sys/kernel/tracing", Text: "tracefs, mounted by porttrace where nothing has mounted it"},
			}},
			{Title: "Environment", Items: []clidoc.Item{
				{Tag: "NO_COLOR", Text: "when set, no colours, even on a terminal"},
				{Tag: "GOMAXPROCS", Text: "when set, the processors a watch, top and the daemon run on (by default one: their work is one event loop)"},
			}},
			{Title: "See also", Text: "ss(8), lsof(8), fuser(1)"},
		},
	}}
	c.commands = []*command{
		watchCommand(),
		whoCommand(),
		whyCommand(),
		freeCommand(),
		historyCommand(),
		topCommand(),
	}
	c.commands = append(c.commands, platformCommands()...)
	c.commands = append(c.commands, []*command{
		{doc: &clidoc.Command{Name: "help", Args: "[COMMAND]", Summary: "print the help of porttrace or of a command",
			Flags: newFlagSet("help")}, run: c.help},
		{doc: &clidoc.Command{Name: "version", Summary: "print the version", Flags: newFlagSet("version")},
			run: printVersion},
		{doc: &clidoc.Command{Name: "completion", Args: "SHELL", Summary: "print the shell completion script for bash, zsh or fish",
			Description: `Load it with: source <(porttrace completion bash), the same for zsh,
or porttrace completion fish | source.`,
			Flags: newFlagSet("completion"), ArgWords: clidoc.Shells}, run: c.completion},
		{doc: &clidoc.Command{Name: "man", Summary: "print the man page, in roff (porttrace man | man -l -)",
			Flags: newFlagSet("man")},
			run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				c.program.Man(stdout)
				return nil
			}},
	}...)
	for _, cmd := range c.commands {
		clidoc.AddHelp(cmd.doc.Flags)
		c.program.Commands = append(c.program.Commands, cmd.doc)
	}
	c.find("help").doc.ArgWords = c.names()
	return c
}

// find returns the subcommand of that name, nil if there is none.
func (c *cli) find(name string) *command {
	for _, cmd := range c.commands {
		if cmd.doc.Name == name && name != "" {
			return cmd
		}
	}
	return nil
}

// names are the subcommands' names.
func (c *cli) names() []string {
	var names []string
	for _, cmd := range c.commands[1:] {
		names = append(names, cmd.doc.Name)
	}
	return names
}

// unexpected says what is wrong with an argument the command takes none
// of, and what was probably meant.
func (c *cli) unexpected(cmd *command, arg string) error {
	if cmd.doc.Name != "" {
		return usageError("%s takes no argument, got %q", cmd.doc.Name, arg)
	}
	if c.find(arg) != nil {
		return usageError("%q is a command: it comes first, as in porttrace %s", arg, arg)
	}
	if _, _, err := tracer.ParsePorts(arg); err == nil {
		return usageError("unexpected argument %q (did you mean --port %s?)", arg, arg)
	}
	return usageError("unknown command %q: the commands are %s", arg, strings.Join(c.names(), ", "))
}

func (c *cli) help(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch len(args) {
	case 0:
		c.program.Help(stdout, c.commands[0].doc)
		return nil
	case 1:
		if cmd := c.find(args[0]); cmd != nil {
			c.program.Help(stdout, cmd.doc)
			return nil
		}
		return usageError("no command %q: the commands are %s", args[0], strings.Join(c.names(), ", "))
	}
	return usageError("help takes one command, e.g. porttrace help who")
}

func (c *cli) completion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return usageError("completion takes one shell: %s", strings.Join(clidoc.Shells, ", "))
	}
	if err := c.program.Completion(stdout, args[0]); err != nil {
		return usageError("%v", err)
	}
	return nil
}
