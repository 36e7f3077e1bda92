package dlq

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Escape makes s safe to print on a terminal and in a line of tab-separated fields: control
// characters (C0 such as tab, CR, LF, ESC and NUL; DEL; C1 such as NEL and CSI), bytes that are
// not UTF-8 (a lone 0x9b is CSI to some terminals), characters Go does not count as printable
// (bidirectional overrides, line and paragraph separators, spaces other than ASCII's) and the
// backslash become Go escapes: \t \r \n \\ \xNN \uNNNN \UNNNNNNNN. Anything else, non-ASCII
// letters included, is kept. Two different keys never print the same.
func Escape(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r == '\\' || r == utf8.RuneError || !strconv.IsPrint(r) })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for s = s[i:]; s != ""; {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x80 && !strconv.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff && !strconv.IsPrint(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		case !strconv.IsPrint(r):
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			b.WriteString(s[:size])
		}
		s = s[size:]
	}
	return b.String()
}
