package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestDocsGolden: the help, the completions and the man page, all written
// from the flag sets the commands parse with, against golden files (go
// test ./cmd/porttrace -run TestDocsGolden -update rewrites them).
func TestDocsGolden(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		golden string
	}{
		{[]string{"--help"}, "help.txt"},
		{[]string{"help"}, "help.txt"},
		{[]string{"who", "-h"}, "help-who.txt"},
		{[]string{"help", "who"}, "help-who.txt"},
		{[]string{"completion", "bash"}, "completion.bash"},
		{[]string{"completion", "zsh"}, "completion.zsh"},
		{[]string{"completion", "fish"}, "completion.fish"},
		{[]string{"man"}, "porttrace.1"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got := runOK(t, tc.args...)
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("porttrace %s differs from %s (-update rewrites it):\n%s", strings.Join(tc.args, " "), path, got)
			}
		})
	}
}

// runOK runs porttrace in-process and returns its standard output.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), args, &stdout, &stderr); err != nil || stderr.Len() > 0 {
		t.Fatalf("porttrace %s: %v; stderr: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// needTool finds a program the test runs; without it the test skips, or
// fails with CI=true (.ci/run installs them).
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must have %s: %v", name, err)
		}
		t.Skipf("needs %s", name)
	}
	return path
}

// writeScript writes porttrace's output for args to a file in a test
// folder.
func writeScript(t *testing.T, name string, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(runOK(t, args...)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The completion tests type command lines into the real shells and read
// what they offer.
var completionCases = []struct {
	line string // up to the cursor
	want string // the candidates, sorted, space-separated
}{
	{"porttrace ", "completion daemon free help history man top version who why"},
	{"porttrace --pro", "--probe"},
	{"porttrace --probe ", "auto kprobe tracepoint"},
	{"porttrace --port 80 --js", "--json"},
	{"porttrace -p 80 -", "--buffer-size --comm --connections --container --duration --event --failed --help --ipv4 --ipv6 --json --pid --port --probe --ready-file --state --time --verbose --version -4 -6 -h -p -v"},
	{"porttrace --time ", "clock date relative"},
	{"porttrace who --", "--all --all-netns --help --json --netns --pids --socket --verbose"},
	{"porttrace completion ", "bash fish zsh"},
	{"porttrace help v", "version"},
	{"porttrace --json ", ""},
}

func TestBashCompletion(t *testing.T) {
	bash := needTool(t, "bash")
	script := writeScript(t, "porttrace.bash", "completion", "bash")
	for _, tc := range completionCases {
		words := strings.Fields(tc.line)
		if strings.HasSuffix(tc.line, " ") {
			words = append(words, "")
		}
		cmd := exec.Command(bash, "--norc", "-c", `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _porttrace; printf '%s\n' "${COMPREPLY[@]}" | sort`, "bash", script)
		cmd.Args = append(cmd.Args, words...)
		checkCompletion(t, "bash", tc.line, tc.want, cmd)
	}
}

func TestFishCompletion(t *testing.T) {
	fish := needTool(t, "fish")
	script := writeScript(t, "porttrace.fish", "completion", "fish")
	for _, tc := range completionCases {
		// complete -C prints "candidate<TAB>description".
		cmd := exec.Command(fish, "--no-config", "-c", `source $argv[1]; complete -C $argv[2] | string replace -r '\t.*' '' | sort`, script, tc.line)
		checkCompletion(t, "fish", tc.line, tc.want, cmd)
	}
}

func checkCompletion(t *testing.T, shell, line, want string, cmd *exec.Cmd) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s completing %q: %v\n%s", shell, line, err, out)
		return
	}
	if got := strings.Join(strings.Fields(string(out)), " "); got != want {
		t.Errorf("%s completes %q with %q, want %q", shell, line, got, want)
	}
}

// TestZshCompletion: zsh reads the script and registers it for porttrace
// (typing into zsh needs a terminal: the script was tried by hand).
func TestZshCompletion(t *testing.T) {
	zsh := needTool(t, "zsh")
	script := writeScript(t, "_porttrace", "completion", "zsh")
	out, err := exec.Command(zsh, "-f", "-c", `autoload -U compinit && compinit -u -d "$2" && source "$1" && print -r -- $_comps[porttrace]`, "zsh", script, filepath.Join(t.TempDir(), "zcompdump")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_porttrace" {
		t.Errorf("zsh did not register the completion: %v\n%s", err, out)
	}
}

// TestManPage: groff reads the page without a warning, and man shows every
// flag.
func TestManPage(t *testing.T) {
	groff := needTool(t, "groff")
	page := writeScript(t, "porttrace.1", "man")
	out, err := exec.Command(groff, "-man", "-ww", "-z", "-Tutf8", page).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff: %v\n%s", err, out)
	}
	text, err := exec.Command(groff, "-man", "-Tascii", "-P", "-cbou", page).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"who PORT", "completion SHELL", "EXIT STATUS", "--help"}
	for _, c := range newCLI().commands {
		c.doc.Flags.VisitAll(func(f *pflag.Flag) { want = append(want, "--"+f.Name) })
	}
	for _, want := range want {
		if !bytes.Contains(text, []byte(want)) {
			t.Errorf("the man page does not show %q", want)
		}
	}
}
