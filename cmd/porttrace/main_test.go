package main

import (
	"bytes"
	"context"
	"errors"
	"os"
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

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--port", "0"}, 2, "invalid port 0: must be 1-65535"},
		{[]string{"--port", "70000"}, 2, "invalid port 70000: must be 1-65535"},
		{[]string{"--port", "no-such-service"}, 2, `invalid port "no-such-service": not a number in 1-65535 nor a known service name`},
		{[]string{"--port", "-5"}, 2, `invalid port "-5"`},
		{[]string{"-4", "-6"}, 2, "-4 and -6 exclude each other"},
		{[]string{"--probe", "fentry"}, 2, `invalid probe mode "fentry": want auto, tracepoint or kprobe`},
		{[]string{"--buffer-size", "3"}, 2, "invalid --buffer-size 3: want a power of two from 1 to 1024 (MiB)"},
		{[]string{"--duration", "-1s"}, 2, "invalid --duration -1s: must not be negative"},
		{[]string{"8080"}, 2, `unexpected argument "8080" (did you mean --port 8080?)`},
		{[]string{"--frobnicate"}, 2, "unknown flag: --frobnicate"},
	} {
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

func TestPortNames(t *testing.T) {
	for in, want := range map[string]uint16{"8080": 8080, "1": 1, "65535": 65535, "http": 80, "ssh": 22} {
		if got, err := parsePort(in); err != nil || got != want {
			t.Errorf("parsePort(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, &stdout, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "porttrace ") {
		t.Errorf("--version printed %q", stdout.String())
	}
}
