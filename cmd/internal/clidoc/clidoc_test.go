package clidoc

import (
	"slices"
	"testing"
)

func TestRoffText(t *testing.T) {
	for in, want := range map[string]string{
		`--port`:         `\-\-port`,
		`C:\dir`:         `C:\edir`,
		`.starts`:        `\&.starts`,
		`'quoted`:        `\&'quoted`,
		`in the .middle`: `in the .middle`,
	} {
		if got := roffText(in); got != want {
			t.Errorf("roffText(%q) = %q, want %q", in, got, want)
		}
	}
	if got, want := roffQuote(`say "hi"`), `"say \(dqhi\(dq"`; got != want {
		t.Errorf("roffQuote = %q, want %q", got, want)
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		text  string
		width int
		want  []string
	}{
		{"one two three", 7, []string{"one two", "three"}},
		{"a verylongword b", 4, []string{"a", "verylongword", "b"}},
		{"", 10, []string{""}},
	} {
		if got := wrap(tc.text, tc.width); !slices.Equal(got, tc.want) {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.text, tc.width, got, tc.want)
		}
	}
}

func TestQuoting(t *testing.T) {
	if got, want := shQuote(`it's`), `'it'\''s'`; got != want {
		t.Errorf("shQuote = %s, want %s", got, want)
	}
	if got, want := fishQuote(`it's \ here`), `'it\'s \\ here'`; got != want {
		t.Errorf("fishQuote = %s, want %s", got, want)
	}
	if got, want := zshEscapeDesc(`a [b]: c\d`), `a \[b\]\: c\\d`; got != want {
		t.Errorf("zshEscapeDesc = %s, want %s", got, want)
	}
}
