// Package clidoc writes a program's help, its shell completions (bash, zsh,
// fish) and its man page from one description of it: its commands and their
// pflag flag sets, the same ones the program parses its arguments with. The
// help, the completions and the manual then cannot disagree with the flags.
package clidoc

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// Program describes a command-line program.
type Program struct {
	Name string
	// Summary says what the program is in a few words: the man page's
	// NAME line.
	Summary string
	// Description is prose: paragraphs separated by blank lines.
	Description string
	// Commands are what the program does. One with an empty Name runs when
	// the first argument names no command; the others are subcommands,
	// named by the first argument.
	Commands []*Command
	// Sections are more man page sections, such as EXIT STATUS or FILES.
	Sections []Section
}

// Command is the program's default command or one of its subcommands.
type Command struct {
	// Name is empty for the default command.
	Name string
	// Args shows the positional arguments, as in "PORT" or "[COMMAND]".
	Args string
	// Summary is one line for the list of commands.
	Summary string
	// Description is prose for the command's help and manual entry.
	Description string
	// Flags are the command's flags; nil when it has none.
	Flags *pflag.FlagSet
	// ArgWords are the words its positional argument can be, offered by
	// the completions; nil when the argument is free.
	ArgWords []string
}

// Section is a man page section: prose, then tagged items.
type Section struct {
	Title string
	Text  string
	Items []Item
}

// Item is a tagged paragraph of a section: an exit status, a file.
type Item struct {
	Tag, Text string
}

// Annotation keys: the flags whose values the completions can offer, and
// the help flag.
const (
	valuesKey = "clidoc_values"
	fileKey   = "clidoc_file"
	helpKey   = "clidoc_help"
)

// AddHelp defines -h, --help on a command's flags. Help and completions
// list it with the command's other flags; the man page says once that
// every command takes it.
func AddHelp(fs *pflag.FlagSet) *bool {
	help := fs.BoolP("help", "h", false, "print this help")
	if err := fs.SetAnnotation("help", helpKey, []string{"true"}); err != nil {
		panic(err)
	}
	return help
}

func isHelp(f *pflag.Flag) bool { return len(f.Annotations[helpKey]) > 0 }

// Values says which words a flag's value can be.
func Values(fs *pflag.FlagSet, name string, values ...string) {
	if err := fs.SetAnnotation(name, valuesKey, values); err != nil {
		panic(err) // a flag name misspelt in the program's own definitions
	}
}

// File says that a flag's value is a file name.
func File(fs *pflag.FlagSet, name string) {
	if err := fs.SetAnnotation(name, fileKey, []string{"true"}); err != nil {
		panic(err)
	}
}

// Command returns the command of that name, nil if there is none.
func (p *Program) Command(name string) *Command {
	for _, c := range p.Commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// subcommands are the commands named by a first argument.
func (p *Program) subcommands() []*Command {
	var out []*Command
	for _, c := range p.Commands {
		if c.Name != "" {
			out = append(out, c)
		}
	}
	return out
}

func (p *Program) subcommandNames() []string {
	var names []string
	for _, c := range p.subcommands() {
		names = append(names, c.Name)
	}
	return names
}

// call is how a command is called: "porttrace who PORT [flags]".
func (p *Program) call(c *Command) string {
	words := []string{p.Name}
	for _, w := range []string{c.Name, c.Args} {
		if w != "" {
			words = append(words, w)
		}
	}
	if hasFlags(c) {
		words = append(words, "[flags]")
	}
	return strings.Join(words, " ")
}

func hasFlags(c *Command) bool {
	return c.Flags != nil && c.Flags.HasAvailableFlags()
}

// Help writes a command's help: how to call it, what it does, the
// subcommands (in the default command's help) and its flags.
func (p *Program) Help(w io.Writer, c *Command) {
	fmt.Fprintf(w, "Usage: %s\n", p.call(c))
	subs := p.subcommands()
	if c.Name == "" && len(subs) > 0 {
		fmt.Fprintf(w, "       %s COMMAND [ARGS]\n", p.Name)
	}
	if text := c.Description; text != "" || c.Name == "" {
		if c.Name == "" && text == "" {
			text = p.Description
		}
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(text))
	}
	if c.Name == "" && len(subs) > 0 {
		fmt.Fprintf(w, "\nCommands:\n")
		var rows [][2]string
		for _, s := range subs {
			rows = append(rows, [2]string{strings.TrimSpace(s.Name + " " + s.Args), s.Summary})
		}
		writeTable(w, rows)
	}
	if hasFlags(c) {
		fmt.Fprintf(w, "\nFlags:\n")
		var rows [][2]string
		visitFlags(c, func(f *pflag.Flag) {
			rows = append(rows, [2]string{flagSynopsis(f), flagText(f)})
		})
		writeTable(w, rows)
	}
	if c.Name == "" && len(subs) > 0 {
		fmt.Fprintf(w, "\nRun '%s help COMMAND' for a command's flags.\n", p.Name)
	}
}

// helpWidth is the width help is wrapped to: a terminal's traditional 80
// columns.
const helpWidth = 80

// writeTable writes two columns, the second aligned and wrapped to
// helpWidth.
func writeTable(w io.Writer, rows [][2]string) {
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	indent := 2 + width + 2
	for _, r := range rows {
		for i, line := range wrap(r[1], max(helpWidth-indent, 20)) {
			first := ""
			if i == 0 {
				first = r[0]
			}
			fmt.Fprintf(w, "  %-*s  %s\n", width, first, line)
		}
	}
}

// wrap breaks text into lines of at most width bytes, at spaces; a word
// longer than that gets a line of its own.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}

// visitFlags calls fn for each flag of the command that is not hidden, in
// the flag set's order (the order of definition when its SortFlags is
// false).
func visitFlags(c *Command, fn func(*pflag.Flag)) {
	if c.Flags == nil {
		return
	}
	c.Flags.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden {
			fn(f)
		}
	})
}

// valueName is what a flag's value is called ("PORTS"), empty for a flag
// that takes none (a boolean).
func valueName(f *pflag.Flag) string {
	name, _ := pflag.UnquoteUsage(f)
	return name
}

// flagSynopsis is "-p, --port PORTS" or "    --json".
func flagSynopsis(f *pflag.Flag) string {
	s := "    --" + f.Name
	if f.Shorthand != "" {
		s = "-" + f.Shorthand + ", --" + f.Name
	}
	if v := valueName(f); v != "" {
		s += " " + v
	}
	return s
}

// flagText is a flag's usage with its default, where that is not the zero
// value.
func flagText(f *pflag.Flag) string {
	_, usage := pflag.UnquoteUsage(f)
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
		return usage
	}
	return fmt.Sprintf("%s (default %s)", usage, f.DefValue)
}

func flagValues(f *pflag.Flag) []string { return f.Annotations[valuesKey] }

func flagIsFile(f *pflag.Flag) bool { return len(f.Annotations[fileKey]) > 0 }
