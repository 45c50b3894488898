package tracer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"nginx", "nginx"},
		{"http-nio-8080-exec-1", "http-nio-8080-exec-1"},
		{`C:\Windows\System32\svchost.exe`, `C:\Windows\System32\svchost.exe`},
		{"naïve 日本 🙂", "naïve 日本 🙂"},
		{"a\tb\nc\rd", `a\x09b\x0ac\x0dd`},
		{"\x00\x1b[2J\x7f", `\x00\x1b[2J\x7f`},
		{"\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		{"raw \x9b31m csi", `raw \x9b31m csi`},                        // a lone C1 byte is not UTF-8
		{"utf8 \u009b31m csi", `utf8 \u009b31m csi`},                  // the same control, encoded
		{"\u0080\u0085\u009f\u00a0", `\u0080\u0085\u009f` + "\u00a0"}, // NBSP is printable
		{"\xff\xfe", `\xff\xfe`},
		{"\xe2\x80", `\xe2\x80`},         // a rune cut short
		{"\xed\xa0\x80", `\xed\xa0\x80`}, // a UTF-16 surrogate is not UTF-8
		{"invoice\u202etxt.exe", `invoice\u202etxt.exe`},
		{"\u202a\u202b\u202c\u202d", `\u202a\u202b\u202c\u202d`},
		{"\u2066\u2067\u2068\u2069", `\u2066\u2067\u2068\u2069`},
		{"\u200e\u200f\u061c", `\u200e\u200f\u061c`},
		{"\u200d\u2029", "\u200d\u2029"}, // not controls that reorder or steer
	} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := string(AppendPrintable([]byte("> "), []byte(tc.in))); got != "> "+tc.want {
			t.Errorf("AppendPrintable(%q) = %q, want %q", tc.in, got, "> "+tc.want)
		}
	}
}

func TestPrintableAllocatesNothing(t *testing.T) {
	name := []byte("ev\x1b[2Jil\u202e\xff")
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendPrintable(buf[:0], name)
		buf = AppendPrintable(buf, "nginx: worker process")
	}); n != 0 {
		t.Errorf("AppendPrintable allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = Printable("nginx: worker process") }); n != 0 {
		t.Errorf("Printable of a harmless name allocates %v times", n)
	}
}

// FuzzPrintable: whatever a process calls itself, what is printed is valid
// UTF-8 with no control and no bidi control in it.
func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"nginx", "\x1b[2J", "\x9b", "\u009b", "a\u202eb", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Printable(s)
		if !utf8.ValidString(out) {
			t.Fatalf("Printable(%q) = %q: not UTF-8", s, out)
		}
		for i, r := range out {
			if mustEscape(r, utf8.RuneLen(r)) {
				t.Fatalf("Printable(%q) = %q: %U left at %d", s, out, r, i)
			}
		}
		if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) && out != s {
			t.Fatalf("Printable(%q) = %q: changed printable ASCII", s, out)
		}
	})
}
