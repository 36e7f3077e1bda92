package bytesize

import (
	"flag"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		err  string
	}{
		{"1048576", 1 << 20, ""},
		{"1MiB", 1 << 20, ""},
		{"1mib", 1 << 20, ""},
		{"1.5 GiB", 3 << 29, ""},
		{"512M", 512 << 20, ""},
		{"2GB", 2e9, ""},
		{"30KiB", 30 << 10, ""},
		{"0", 0, ""},
		{"0B", 0, ""},
		{"", 0, "not a size"},
		{"MiB", 0, "not a size"},
		{"-1MiB", 0, "between 0 and"},
		{"1.5B", 0, "whole number"},
		{"0x10", 0, "not a size"},
		{"1e3", 1000, ""},
		{"10EiB", 0, "not a size"},
		{"9000PiB", 0, "between 0 and"},
	} {
		got, err := Parse(c.in)
		if c.err == "" && (err != nil || got != c.want) || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("Parse(%q) = %d, %v; want %d, %q", c.in, got, err, c.want, c.err)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{1 << 20: "1MiB", 1 << 30: "1GiB", 1536 << 10: "1536KiB", 1000: "1000B", 0: "0B", 16 << 20: "16MiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
		if back, err := Parse(want); err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	}
}

// TestFlag: a size flag takes units on the command line and in its environment variable, and
// its help shows the default with units.
func TestFlag(t *testing.T) {
	var n int64
	a := &cli.App{Flags: []cli.Flag{Flag("inline-limit", 1<<20, "TEST_BYTESIZE_LIMIT", &n, "blobs above this")},
		Action: func(*cli.Context) error { return nil }}
	if err := a.Run([]string{"x", "--inline-limit", "4MiB"}); err != nil || n != 4<<20 {
		t.Fatalf("--inline-limit 4MiB: %d, %v", n, err)
	}
	if err := a.Run([]string{"x", "--inline-limit", "lots"}); err == nil {
		t.Error("--inline-limit lots: no error")
	}
	t.Setenv("TEST_BYTESIZE_LIMIT", "2MiB")
	n = 0
	a.Flags = []cli.Flag{Flag("inline-limit", 1<<20, "TEST_BYTESIZE_LIMIT", &n, "blobs above this")}
	if err := a.Run([]string{"x"}); err != nil || n != 2<<20 {
		t.Fatalf("$TEST_BYTESIZE_LIMIT=2MiB: %d, %v", n, err)
	}
	if s := a.Flags[0].String(); !strings.Contains(s, "(default: 1MiB)") {
		t.Errorf("help %q: no default with units", s)
	}
	var _ flag.Value = Value{}
}
