package clidoc

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// Man writes the program's man page (section 1) in roff: synopsis,
// description, commands, each command's flags, then Sections. It carries
// no date, so that the same flags always make the same page.
func (p *Program) Man(w io.Writer) {
	upper := strings.ToUpper(p.Name)
	fmt.Fprintf(w, ".TH %s 1 \"\" %s \"User Commands\"\n", roffQuote(upper), roffQuote(p.Name))
	fmt.Fprintf(w, ".SH NAME\n%s \\- %s\n", roffText(p.Name), roffText(p.Summary))

	fmt.Fprintf(w, ".SH SYNOPSIS\n")
	for i, c := range p.Commands {
		if i > 0 {
			fmt.Fprintf(w, ".br\n")
		}
		fmt.Fprintf(w, ".B %s\n", roffQuote(strings.TrimSpace(p.Name+" "+c.Name)))
		var rest []string
		if c.Args != "" {
			rest = append(rest, `\fI`+roffText(c.Args)+`\fR`)
		}
		if manFlags(c) {
			rest = append(rest, `[\fIflags\fR]`)
		}
		if len(rest) > 0 {
			fmt.Fprintf(w, "%s\n", strings.Join(rest, " "))
		}
	}

	fmt.Fprintf(w, ".SH DESCRIPTION\n")
	roffParagraphs(w, p.Description)

	if subs := p.subcommands(); len(subs) > 0 {
		fmt.Fprintf(w, ".SH COMMANDS\n")
		for _, c := range subs {
			fmt.Fprintf(w, ".TP\n\\fB%s\\fR", roffText(c.Name))
			if c.Args != "" {
				fmt.Fprintf(w, " \\fI%s\\fR", roffText(c.Args))
			}
			fmt.Fprintf(w, "\n%s.\n", roffText(c.Summary))
			if c.Description != "" {
				fmt.Fprintf(w, ".IP\n")
				roffParagraphs(w, c.Description)
			}
		}
	}

	fmt.Fprintf(w, ".SH OPTIONS\n")
	fmt.Fprintf(w, "Every command takes \\fB\\-h\\fR, \\fB\\-\\-help\\fR: it prints the command's help.\n")
	for _, c := range p.Commands {
		if !manFlags(c) {
			continue
		}
		fmt.Fprintf(w, ".SS %s\n", roffQuote(strings.TrimSpace(p.Name+" "+c.Name)))
		visitFlags(c, func(f *pflag.Flag) {
			if !isHelp(f) {
				fmt.Fprintf(w, ".TP\n%s\n%s\n", roffFlag(f), roffText(flagText(f)))
			}
		})
	}

	for _, s := range p.Sections {
		fmt.Fprintf(w, ".SH %s\n", roffQuote(strings.ToUpper(s.Title)))
		if s.Text != "" {
			roffParagraphs(w, s.Text)
		}
		for _, it := range s.Items {
			fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s\n", roffText(it.Tag), roffText(it.Text))
		}
	}
}

// manFlags says whether the command has flags besides --help, which the
// man page does not repeat for each command.
func manFlags(c *Command) bool {
	found := false
	visitFlags(c, func(f *pflag.Flag) { found = found || !isHelp(f) })
	return found
}

// roffFlag is a flag's tag: \fB\-p\fR, \fB\-\-port\fR \fIPORTS\fR.
func roffFlag(f *pflag.Flag) string {
	var names []string
	for _, n := range flagNames(f) {
		names = append(names, `\fB`+roffText(n)+`\fR`)
	}
	s := strings.Join(names, ", ")
	if v := valueName(f); v != "" {
		s += ` \fI` + roffText(v) + `\fR`
	}
	return s
}

// roffParagraphs writes prose: paragraphs separated by blank lines.
func roffParagraphs(w io.Writer, text string) {
	for i, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			fmt.Fprintf(w, ".PP\n")
		}
		for _, line := range strings.Split(para, "\n") {
			fmt.Fprintf(w, "%s\n", roffText(strings.TrimSpace(line)))
		}
	}
}

// roffText escapes text for roff: backslashes, hyphens as the minus sign
// that option names are typed with, and a line starting with a control
// character.
func roffText(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffQuote is a macro argument: escaped and in double quotes.
func roffQuote(s string) string {
	return `"` + strings.ReplaceAll(roffText(s), `"`, `\(dq`) + `"`
}
