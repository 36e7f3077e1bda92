package dlq

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/deadletter"
)

// TestEscape: control characters (C0, DEL, C1), bytes that are not UTF-8, invisible format and
// separator characters and the backslash are written as Go escapes; everything else as is.
func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain/key.jpg":        "plain/key.jpg",
		"a b":                  "a b",
		"tab\there":            `tab\there`,
		"\x1b[31mred\x1b[0m":   `\x1b[31mred\x1b[0m`,
		"cr\rover":             `cr\rover`,
		"nl\nx":                `nl\nx`,
		"nul\x00del\x7f":       `nul\x00del\x7f`,
		"nel\u0085csi\u009b":   `nel\u0085csi\u009b`,
		"raw\x85\x9bbyte":      `raw\x85\x9bbyte`,
		`back\slash`:           `back\\slash`,
		"bidi\u202egpj.exe":    `bidi\u202egpj.exe`,
		"nbsp\u00a0x":          `nbsp\u00a0x`,
		"été/日本/😀":             "été/日本/😀",
		"\u2028line\u2029para": `\u2028line\u2029para`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestExportEscapes: `ferry dlq export` writes keys (and every other field) escaped, one line of 5
// fields a dead letter, to stdout and to --out; --raw writes them as stored; the DLQ keeps the
// raw key, which replay sends back. Before, a tab split the key's line and an escape sequence
// reached the terminal.
func TestExportEscapes(t *testing.T) {
	url, js, n := bustest.JobAt(t)
	keys := []string{"a\tb", "\x1b[31mred", "x\ry", "nel\u0085z"}
	for _, k := range keys {
		deadLetter(t, js, n, k, bus.StageFetcher, bus.ReasonNotFound, "")
	}
	file := filepath.Join(t.TempDir(), "dead.tsv")
	for _, tc := range []struct {
		args []string
		want []string // the keys, as written
	}{
		{[]string{"export"}, []string{`a\tb`, `\x1b[31mred`, `x\ry`, `nel\u0085z`}},
		{[]string{"export", "--out", file}, []string{`a\tb`, `\x1b[31mred`, `x\ry`, `nel\u0085z`}},
		{[]string{"export", "--raw"}, keys},
	} {
		out, _, err := run(t, url, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if len(tc.args) > 1 && tc.args[1] == "--out" {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			out = string(b)
		}
		raw := len(tc.args) > 1 && tc.args[1] == "--raw"
		if !raw {
			for _, c := range []string{"\x1b", "\r", "\u0085"} {
				if strings.Contains(out, c) {
					t.Errorf("%v: output holds %q: %q", tc.args, c, out)
				}
			}
		}
		var got []string
		for line := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
			if raw {
				got = append(got, line[:strings.Index(line, "\t"+bus.StageFetcher)])
				continue
			}
			f := strings.Split(line, "\t")
			if len(f) != 5 {
				t.Errorf("%v: line %q has %d fields, want 5", tc.args, line, len(f))
				continue
			}
			got = append(got, f[0])
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%v: keys %q, want %q", tc.args, got, tc.want)
		}
	}
	var stored []string
	if _, err := deadletter.Each(context.Background(), js, n, deadletter.Filter{}, 0, func(e deadletter.Entry) error {
		stored = append(stored, e.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(stored, "|") != strings.Join(keys, "|") {
		t.Errorf("the DLQ holds %q, want the raw keys %q", stored, keys)
	}
}
