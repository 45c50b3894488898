package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// testRoles are processes a test runs as the test binary itself, chosen by
// PORTTRACE_TEST_ROLE; platform test files add theirs.
var testRoles = map[string]func(){}

// TestMain lets a test run porttrace as its own process, as an operator
// would: PORTTRACE_ARGS holds the command line.
func TestMain(m *testing.M) {
	if role, ok := testRoles[os.Getenv("PORTTRACE_TEST_ROLE")]; ok {
		role()
		os.Exit(0)
	}
	if args, ok := os.LookupEnv("PORTTRACE_ARGS"); ok {
		os.Args = append([]string{"porttrace"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// badInput is a command line that porttrace must refuse, with its exit
// status and the start of its one line.
type badInput struct {
	args []string
	code int
	want string
}

func TestBadInput(t *testing.T) {
	for _, tc := range append([]badInput{
		{[]string{"--port", "0"}, 2, "invalid port 0: must be 1-65535"},
		{[]string{"--port", "70000"}, 2, "invalid port 70000: must be 1-65535"},
		{[]string{"--port", "no-such-service"}, 2, `invalid port "no-such-service": not a number in 1-65535 nor a known service name`},
		{[]string{"--port", "-5"}, 2, `invalid port "-5"`},
		{[]string{"-4", "-6"}, 2, "-4 and -6 exclude each other"},
		{[]string{"--probe", "fentry"}, 2, `invalid probe mode "fentry": want auto, tracepoint or kprobe`},
		{[]string{"--buffer-size", "3"}, 2, "invalid --buffer-size 3: want a power of two from 1 to 1024 (MiB)"},
		{[]string{"--duration", "-1s"}, 2, "invalid --duration -1s: must not be negative"},
		{[]string{"8080"}, 2, `unexpected argument "8080" (did you mean --port 8080?)`},
		{[]string{"http"}, 2, `unexpected argument "http" (did you mean --port http?)`},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate": the commands are who, why, free, history, top, `},
		{[]string{"--json", "who"}, 2, `"who" is a command: it comes first, as in porttrace who`},
		{[]string{"--frobnicate"}, 2, "unknown flag: --frobnicate"},
		{[]string{"--port", ""}, 2, "empty port list: give ports such as 8080, 80,443 or 8000-8100"},
		{[]string{"--port", "80", "--port", ""}, 2, "empty port list"},
		{[]string{"--port", "80,,443"}, 2, `invalid port list "80,,443": an empty item between commas`},
		{[]string{"--port", "9000-8000"}, 2, "invalid port range 9000-8000: 9000 is above 8000"},
		{[]string{"--pid", "4194305"}, 2, "invalid --pid 4194305: no such process"},
		{[]string{"--pid", "0"}, 2, `invalid argument "0" for "--pid" flag: pid 0 is no process`},
		{[]string{"--pid", "abc"}, 2, `invalid argument "abc" for "--pid" flag: want a process id, a number from 1`},
		{[]string{"--state", "TIMEWAIT"}, 2, `invalid state "TIMEWAIT": want one of ESTABLISHED, SYN_SENT,`},
		{[]string{"--state", ""}, 2, `invalid state ""`},
		{[]string{"--event", "connect"}, 2, `invalid event "connect": want one of state, listen, bind, socket, owner`},
		{[]string{"--event", "bind", "--connections"}, 2, "--event chooses among the lines of transitions, which --connections replaces"},
		{[]string{"--comm", "nginx,"}, 2, `invalid --comm "nginx,": an empty name`},
		{[]string{"--time", "iso"}, 2, `invalid time format "iso": want clock, date or relative`},
		{[]string{"who"}, 2, "who takes one or more ports, e.g. porttrace who 8080"},
		{[]string{"who", "0"}, 2, "invalid port 0: must be 1-65535"},
		{[]string{"who", "80/sctp"}, 2, `invalid protocol in "80/sctp": want tcp or udp`},
		{[]string{"who", "--netns", "a", "--all-netns", "80"}, 2, "--netns and --all-netns exclude each other"},
		{[]string{"who", "--pids", "--json", "80"}, 2, "--pids prints only pids: it excludes --json and --all"},
		{[]string{"who", "-t", "--all", "80"}, 2, "--pids prints only pids: it excludes --json and --all"},
		{[]string{"why"}, 2, "why takes a port and, optionally, an address"},
		{[]string{"why", "80", "localhost"}, 2, `invalid address "localhost"`},
		{[]string{"free"}, 2, "free takes one port"},
		{[]string{"free", "80", "--timeout", "0s"}, 2, "invalid --timeout 0s: must be positive"},
		{[]string{"top", "--interval", "1ms"}, 2, "invalid --interval 1ms: want 100ms or more"},
		{[]string{"top", "--sort", "pid"}, 2, `invalid sort key "pid": want one of port, sockets, conns, close-wait, binds`},
		{[]string{"top", "-n", "-1"}, 2, "invalid --iterations -1: must not be negative"},
		{[]string{"top", "8080"}, 2, `top takes no argument, got "8080"`},
		{[]string{"help", "nonesuch"}, 2, `no command "nonesuch": the commands are who, why, free, history, top, `},
		{[]string{"version", "now"}, 2, `version takes no argument, got "now"`},
		{[]string{"completion"}, 2, "completion takes one shell: bash, zsh, fish"},
		{[]string{"completion", "tcsh"}, 2, `no completion for shell "tcsh": want bash, zsh, fish`},
	}, platformBadInputs...) {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			var exit exitError
			if !errors.As(err, &exit) || exit.code != tc.code {
				t.Fatalf("got %v, want exit %d", err, tc.code)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("message %q, want one line starting %q", msg, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var stdout bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stdout); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(stdout.String(), "porttrace ") || strings.Count(stdout.String(), "\n") != 1 {
			t.Errorf("%s printed %q", args, stdout.String())
		}
	}
}

// TestWatching: the watch's first line says what is watched, in the
// user's words.
func TestWatching(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "every port, IPv4 and IPv6"},
		{[]string{"--port", "http"}, "port 80 (http), IPv4 and IPv6"},
		{[]string{"-p", "8096", "--port", "8080", "-4"}, "ports 8080,8096, IPv4 only"},
		{[]string{"-p", "https,8000-8100,ssh", "-6", "--duration", "30s"}, "ports 22,443,8000-8100 (https 443, ssh 22), IPv6 only, for 30s"},
		{[]string{"-p", "8080", "--pid", strconv.Itoa(os.Getpid())}, "port 8080, IPv4 and IPv6, sockets of process " + strconv.Itoa(os.Getpid()) + " (porttrace.test) and its descendants"},
		{[]string{"--state", "time-wait,CLOSE_WAIT", "--comm", "nginx", "--comm", "curl,wget", "--failed"},
			"every port, IPv4 and IPv6, sockets of processes named nginx or curl or wget, only TIME_WAIT or CLOSE_WAIT, only failures"},
		{[]string{"--event", "bind,listen", "-4"}, "every port, IPv4 only, only bind, listen lines"},
		{[]string{"-p", "80", "--connections"}, "port 80, IPv4 and IPv6, one line per connection"},
	} {
		var f watchFlags
		fs := newFlagSet("porttrace")
		f.define(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := f.checkWatch(); err != nil {
			t.Fatal(err)
		}
		// Windows names a process by its image, porttrace.test.exe.
		if got := strings.Replace(f.watching(), ".exe)", ")", 1); got != tc.want {
			t.Errorf("%q: watching %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestSnapshotCommands: the commands that build a snapshot of a busy
// port's sockets collect garbage only near snapshotMemoryLimit; who once
// missed being one and spent a fifth of its time collecting.
func TestSnapshotCommands(t *testing.T) {
	c := newCLI()
	for _, name := range c.names() {
		want := name == "who" || name == "why" || name == "free"
		if got := c.find(name).snapshot; got != want {
			t.Errorf("%s: snapshot %v, want %v", name, got, want)
		}
	}
}

// The tracing commands run on one processor unless GOMAXPROCS says
// otherwise.
func TestOneProcessor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(2)
	t.Setenv("GOMAXPROCS", "2")
	oneProcessor()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Errorf("with GOMAXPROCS=2 set, %d processors", n)
	}
	os.Unsetenv("GOMAXPROCS")
	oneProcessor()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("without GOMAXPROCS, %d processors, want 1", n)
	}
	for _, c := range newCLI().commands {
		want := c.doc.Name == "" || c.doc.Name == "top" || c.doc.Name == "daemon"
		if c.traces != want {
			t.Errorf("command %q traces = %v, want %v", c.doc.Name, c.traces, want)
		}
	}
}
