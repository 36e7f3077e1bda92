package diff

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// mapDiff is the reference: the same trimming rules, with maps.
func mapDiff(a, b []byte) (onlyA, onlyB []string) {
	set := func(in []byte) map[string]bool {
		m := map[string]bool{}
		in = bytes.TrimPrefix(in, []byte("\xef\xbb\xbf"))
		for _, l := range strings.Split(string(in), "\n") {
			if k := strings.Trim(l, " \t\r"); k != "" {
				m[k] = true
			}
		}
		return m
	}
	ma, mb := set(a), set(b)
	for k := range ma {
		if !mb[k] {
			onlyA = append(onlyA, k)
		}
	}
	for k := range mb {
		if !ma[k] {
			onlyB = append(onlyB, k)
		}
	}
	slices.Sort(onlyA)
	slices.Sort(onlyB)
	return onlyA, onlyB
}

func readResult(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func compress(t *testing.T, kind string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch kind {
	case "gz":
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case "zst":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	default:
		return b
	}
	return buf.Bytes()
}

// diffOf runs diffLists on a and b (written as files of kind) with a chunk budget of budget bytes
// and checks the outputs against mapDiff.
func diffOf(t *testing.T, a, b []byte, kind string, budget int64) Result {
	t.Helper()
	dir := t.TempDir()
	pa, pb := filepath.Join(dir, "a."+kind), filepath.Join(dir, "b."+kind)
	if err := os.WriteFile(pa, compress(t, kind, a), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pb, compress(t, kind, b), 0o644); err != nil {
		t.Fatal(err)
	}
	out, tmp := t.TempDir(), t.TempDir()
	d := &differ{out: out, tmp: tmp, budget: budget}
	res, err := d.diffLists(context.Background(), pa, pb)
	if err != nil {
		t.Fatalf("diffLists: %v", err)
	}
	wantA, wantB := mapDiff(a, b)
	if got := readResult(t, filepath.Join(out, OnlyInA)); !slices.Equal(got, wantA) {
		t.Errorf("only-in-A = %q, want %q", trunc(got), trunc(wantA))
	}
	if got := readResult(t, filepath.Join(out, OnlyInB)); !slices.Equal(got, wantB) {
		t.Errorf("only-in-B = %q, want %q", trunc(got), trunc(wantB))
	}
	if res.OnlyA != int64(len(wantA)) || res.OnlyB != int64(len(wantB)) || res.A.Unique-res.OnlyA != res.Common || res.B.Unique-res.OnlyB != res.Common {
		t.Errorf("counts %+v do not add up (want only-in-A %d, only-in-B %d)", res, len(wantA), len(wantB))
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("spill folder left behind: %v", left)
	}
	return res
}

func trunc(s []string) []string {
	if len(s) > 10 {
		return append(s[:10:10], fmt.Sprintf("… %d more", len(s)-10))
	}
	return s
}

func TestDiff(t *testing.T) {
	for _, c := range []struct {
		name   string
		a, b   string
		counts Result // lines and uniques checked; zero: not checked
	}{
		{"both empty", "", "", Result{}},
		{"A empty", "", "x\ny\n", Result{B: Counts{2, 2}}},
		{"B empty", "x\n", "", Result{A: Counts{1, 1}}},
		{"same", "a\nb\n", "b\na\n", Result{A: Counts{2, 2}, B: Counts{2, 2}}},
		{"duplicates", "a\na\na\nb\n", "b\nb\nc\n", Result{A: Counts{4, 2}, B: Counts{3, 2}}},
		{"unsorted", "z\nm\na\nq\n", "q\nb\nz\n", Result{A: Counts{4, 4}, B: Counts{3, 3}}},
		{"crlf and spaces", "a\r\n  b \r\n\tc\t\n", "a\nb\nc", Result{A: Counts{3, 3}, B: Counts{3, 3}}},
		{"bom", "\xef\xbb\xbfa\nb\n", "a\n\xef\xbb\xbfb\n", Result{A: Counts{2, 2}, B: Counts{2, 2}}},
		{"blank lines", "\n\n  \r\na\n\n", "\r\n\nb\n", Result{A: Counts{1, 1}, B: Counts{1, 1}}},
		{"no final newline", "a\nb", "b\nc", Result{A: Counts{2, 2}, B: Counts{2, 2}}},
		{"bytewise order", "B\na\n_\né\n", "a\n", Result{A: Counts{4, 4}, B: Counts{1, 1}}},
		{"prefixes", "ab\nabc\na\n", "abc\nabcd\n", Result{A: Counts{3, 3}, B: Counts{2, 2}}},
		{"nul bytes", "a\nab\na\x00\n", "a\x00\x00\n", Result{A: Counts{3, 3}, B: Counts{1, 1}}},
	} {
		for _, kind := range []string{"txt", "gz", "zst"} {
			for _, budget := range []int64{1 << 20, 200} { // in memory; a chunk of a few lines
				t.Run(fmt.Sprintf("%s/%s/%d", c.name, kind, budget), func(t *testing.T) {
					res := diffOf(t, []byte(c.a), []byte(c.b), kind, budget)
					if res.A != c.counts.A || res.B != c.counts.B {
						t.Errorf("A %+v B %+v, want %+v %+v", res.A, res.B, c.counts.A, c.counts.B)
					}
				})
			}
		}
	}
}

// keys generates n lines like the seed's keys, with duplicates, blank lines, CRLF and some keys
// that share long prefixes or are prefixes of each other (the radix sort's refill and tie paths).
func keys(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for range n {
		switch r.IntN(20) {
		case 0:
			b.WriteString("\r\n")
		case 1:
			fmt.Fprintf(&b, "custom/%s/%d\n", strings.Repeat("deep/", r.IntN(20)), r.IntN(50))
		case 2:
			fmt.Fprintf(&b, "t01%x\n", r.IntN(300))
		case 3:
			fmt.Fprintf(&b, "  t01%024x.jpg\r\n", r.IntN(1000))
		default:
			fmt.Fprintf(&b, "t01%024x.jpg\n", r.IntN(n*2))
		}
	}
	return b.Bytes()
}

// TestDiffRandom compares with the map-based diff on generated inputs, spilled through many runs.
func TestDiffRandom(t *testing.T) {
	for i, c := range []struct {
		n      int
		budget int64
	}{{100, 1 << 20}, {3000, 1 << 20}, {3000, 4 << 10}, {20000, 16 << 10}, {50000, 300 << 10}} {
		t.Run(fmt.Sprintf("%d-lines-%d-bytes", c.n, c.budget), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			a, b := keys(r, c.n), keys(r, c.n/2)
			res := diffOf(t, a, b, "txt", c.budget)
			if c.budget < 1<<20 && res.Spilled == 0 {
				t.Errorf("nothing spilled with a budget of %d bytes", c.budget)
			}
		})
	}
}

func TestSortEntries(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{0, 1, 2, 31, 33, 1000, 100000} {
		for _, gen := range []struct {
			name string
			line func() string
		}{
			{"hex keys", func() string { return fmt.Sprintf("t01%024x.jpg", r.Uint64()>>uint(r.IntN(64))) }},
			{"one key", func() string { return "same" }},
			{"long shared prefix", func() string { return strings.Repeat("p", 100) + fmt.Sprint(r.IntN(500)) }},
			{"short and binary", func() string { return string([]byte{byte(r.IntN(3)), byte(r.IntN(3))}[:r.IntN(3)]) }},
		} {
			t.Run(fmt.Sprintf("%s/%d", gen.name, n), func(t *testing.T) {
				c := &chunk{arena: make([]byte, 0, n*200), ents: make([]entry, 0, n)}
				var want []string
				for range n {
					l := gen.line()
					c.add([]byte(l))
					want = append(want, l)
				}
				sortEntries(c.ents, make([]entry, n), c.arena, c.lcp)
				slices.Sort(want)
				for i := range c.ents {
					if got := string(c.line(i)); got != want[i] {
						t.Fatalf("line %d = %q, want %q", i, got, want[i])
					}
				}
			})
		}
	}
}

// FuzzDiff checks any pair of inputs against the map-based diff, with chunks of a few lines.
func FuzzDiff(f *testing.F) {
	f.Add([]byte("a\nb\nb\n"), []byte("b\nc\r\n"))
	f.Add([]byte("\xef\xbb\xbfx\n\n y \n"), []byte("x\x00\nx\n"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		// A line must fit a chunk's arena (a real --mem gives megabytes): budget/128 lines of 40 bytes.
		longest := 0
		for l := range bytes.SplitSeq(append(a, b...), []byte{'\n'}) {
			longest = max(longest, len(l))
		}
		diffOf(t, a, b, "txt", int64(256+4*longest))
	})
}

func TestStdinAndErrors(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	os.WriteFile(a, []byte("x\n"), 0o644)
	d := &differ{out: dir, tmp: filepath.Join(dir, "no-such-folder"), budget: 1 << 20}
	if _, err := d.diffLists(context.Background(), a, a); err == nil || !strings.Contains(err.Error(), "--tmp") {
		t.Errorf("missing --tmp folder: %v", err)
	}
	d.tmp = dir
	if _, err := d.diffLists(context.Background(), a, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing B: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, OnlyInA)); !os.IsNotExist(err) {
		t.Errorf("a failed diff left %s behind (%v)", OnlyInA, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.diffLists(ctx, a, a); err == nil {
		t.Error("a cancelled diff succeeded")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "ferry-diff-") || strings.HasSuffix(e.Name(), ".partial") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{Out: dir, OnlyA: OnlyInA, OnlyB: OnlyInB, Mem: "512MiB", Tmp: dir, Missing: MissingInS3, Listers: 16}
	for _, c := range []struct {
		name string
		edit func(*Config)
		args []string
		want string
	}{
		{"two lists", func(*Config) {}, []string{"a", "b"}, ""},
		{"one list", func(*Config) {}, []string{"a"}, "want two key lists"},
		{"flag after the lists", func(*Config) {}, []string{"a", "b", "--mem", "1GiB"}, "flags go before"},
		{"both stdin", func(*Config) {}, []string{"-", "-"}, "only one of A and B"},
		{"mem not a size", func(c *Config) { c.Mem = "lots" }, []string{"a", "b"}, "--mem"},
		{"mem too small", func(c *Config) { c.Mem = "1MiB" }, []string{"a", "b"}, "at least 32MiB"},
		{"out missing: made", func(c *Config) { c.Out = filepath.Join(dir, "nope") }, []string{"a", "b"}, ""},
		{"out a file", func(c *Config) { c.Out = filepath.Join(dir, "a-file") }, []string{"a", "b"}, "--out"},
		{"a path for a name", func(c *Config) { c.OnlyA = "x/y" }, []string{"a", "b"}, "--only-a"},
		{"tmp missing", func(c *Config) { c.Tmp = filepath.Join(dir, "nope") }, []string{"a", "b"}, "--tmp"},
		{"bucket mode", func(c *Config) { c.Source, c.Bucket = "k.txt", "s3://b/p/" }, nil, ""},
		{"bucket without source", func(c *Config) { c.Bucket = "s3://b" }, nil, "go together"},
		{"bucket not s3", func(c *Config) { c.Source, c.Bucket = "k", "b/p" }, nil, "want s3://bucket"},
		{"bucket mode with lists", func(c *Config) { c.Source, c.Bucket = "k", "s3://b" }, []string{"a"}, "take no arguments"},
		{"listers", func(c *Config) { c.Source, c.Bucket, c.Listers = "k", "s3://b", 0 }, nil, "--listers"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			c.edit(&cfg)
			err := cfg.Validate(c.args)
			if c.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want %q", err, c.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512MiB": 512 << 20, "2GiB": 2 << 30, "600MB": 600e6, "1048576": 1 << 20, " 1.5 GiB": 3 << 29} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "0", "NaN", "1XB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}
