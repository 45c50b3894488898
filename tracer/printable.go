package tracer

import (
	"net/netip"
	"unicode/utf8"
)

// Endpoint is an address and port as text shows them: an IPv4-mapped
// address as the IPv4 address it is (a dual-stack server's peers then read
// as they do on their own side, and as the kernel treats them when it
// binds), an IPv6 one in brackets.
func Endpoint(ap netip.AddrPort) string {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// AppendPrintable appends s to b with everything that could steer the
// operator's terminal or hide what it shows written as a visible escape:
// processes choose their own names and command lines, so a name is text
// from an adversary. It escapes
//
//   - C0 controls and DEL, and every byte that is not valid UTF-8, as \xHH
//     (a raw 0x9b byte is a CSI to terminals that read 8-bit controls);
//   - C1 controls (U+0080-U+009F, the UTF-8 encoding of CSI among them) and
//     the Unicode bidirectional controls (U+061C, U+200E, U+200F,
//     U+202A-U+202E, U+2066-U+2069), which reorder what follows them on the
//     screen, as \uHHHH.
//
// A backslash stays as it is: the escapes exist to keep the terminal safe,
// not to be decoded, and Windows paths would double every separator.
//
// It allocates nothing beyond growing b, so the per-event path may use it.
// It lives in the model because every part that prints (render, the CLI,
// the platform packages) imports the model and nothing else in common.
func AppendPrintable[S ~string | ~[]byte](b []byte, s S) []byte {
	for i := 0; i < len(s); {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b = append(b, c)
			i++
			continue
		}
		r, size := decodeRune(s[i:])
		switch {
		case !mustEscape(r, size):
			b = append(b, s[i:i+size]...)
		case size == 1: // a C0 control, DEL or a byte that is not UTF-8
			b = appendEscape(b, `\x`, uint32(s[i]), 2)
		default:
			b = appendEscape(b, `\u`, uint32(r), 4)
		}
		i += size
	}
	return b
}

// Printable is s made safe for a terminal as AppendPrintable does it; s
// itself when nothing needed escaping.
func Printable(s string) string {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if mustEscape(r, size) {
			return string(AppendPrintable(make([]byte, 0, len(s)+16), s))
		}
		i += size
	}
	return s
}

// mustEscape reports whether the rune r, decoded from size bytes, is one
// AppendPrintable escapes.
func mustEscape(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size == 1: // not UTF-8
		return true
	case r < 0x20 || r == 0x7f: // C0 controls, DEL
		return true
	case r >= 0x80 && r <= 0x9f: // C1 controls
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // ALM, LRM, RLM
		return true
	case r >= 0x202a && r <= 0x202e: // LRE, RLE, PDF, LRO, RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}

// decodeRune is utf8.DecodeRune for either a string or a byte slice,
// copying at most utf8.UTFMax bytes to the stack so that neither form is
// converted to the other (which would allocate).
func decodeRune[S ~string | ~[]byte](s S) (rune, int) {
	var buf [utf8.UTFMax]byte
	n := copy(buf[:], s[:min(len(s), utf8.UTFMax)])
	return utf8.DecodeRune(buf[:n])
}

func appendEscape(b []byte, prefix string, v uint32, digits int) []byte {
	const hex = "0123456789abcdef"
	b = append(b, prefix...)
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b = append(b, hex[v>>shift&0xf])
	}
	return b
}
