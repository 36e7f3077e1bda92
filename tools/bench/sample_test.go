package bench

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func lines(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("k" + strconv.Itoa(i) + "\n")
	}
	return b.String()
}

func TestReservoir(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	tests := []struct {
		name    string
		input   string
		n       int
		want    []string // nil: only the size is checked
		size    int
		lines   int64
		skipped int64
	}{
		{name: "empty", input: "", n: 5, want: []string{}, lines: 0},
		{name: "fewer keys than n: all kept, in order", input: "a\nb\nc\n", n: 5, want: []string{"a", "b", "c"}, lines: 3},
		{name: "exactly n", input: "a\nb\n", n: 2, want: []string{"a", "b"}, lines: 2},
		{name: "trimmed like the producer", input: "  a \r\n\n\t\nb\r\nc", n: 10, want: []string{"a", "b", "c"}, lines: 3},
		{name: "long lines skipped", input: "a\n" + long + "\nb\n" + long, n: 10, want: []string{"a", "b"}, lines: 2, skipped: 2},
		{name: "bounded", input: lines(10_000), n: 100, size: 100, lines: 10_000},
		{name: "n of 1", input: lines(1000), n: 1, size: 1, lines: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := reservoir(strings.NewReader(tt.input), tt.n, rand.New(rand.NewPCG(7, 0)))
			if err != nil {
				t.Fatal(err)
			}
			if s.Lines != tt.lines || s.Skipped != tt.skipped {
				t.Errorf("lines, skipped = %d, %d; want %d, %d", s.Lines, s.Skipped, tt.lines, tt.skipped)
			}
			if tt.want != nil {
				if !slices.Equal(s.Keys, tt.want) && !(len(s.Keys) == 0 && len(tt.want) == 0) {
					t.Errorf("keys = %q, want %q", s.Keys, tt.want)
				}
				return
			}
			if len(s.Keys) != tt.size || cap(s.Keys) > 2*tt.size {
				t.Errorf("%d keys (capacity %d), want %d", len(s.Keys), cap(s.Keys), tt.size)
			}
			seen := map[string]bool{}
			for _, k := range s.Keys {
				if seen[k] || !strings.HasPrefix(k, "k") {
					t.Errorf("key %q repeated or not from the input", k)
				}
				seen[k] = true
			}
		})
	}
}

func TestReservoirRejectsZero(t *testing.T) {
	if _, err := reservoir(strings.NewReader("a\n"), 0, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Fatal("n = 0 accepted")
	}
}

func TestReservoirIsDeterministic(t *testing.T) {
	in := lines(5000)
	sample := func(seed uint64) []string {
		s, err := reservoir(strings.NewReader(in), 50, rand.New(rand.NewPCG(seed, 0)))
		if err != nil {
			t.Fatal(err)
		}
		return s.Keys
	}
	if a, b := sample(42), sample(42); !slices.Equal(a, b) {
		t.Errorf("same seed, different samples:\n%q\n%q", a, b)
	}
	if a, b := sample(42), sample(43); slices.Equal(a, b) {
		t.Errorf("seeds 42 and 43 gave the same sample %q", a)
	}
}

// Every key must be equally likely to be kept, the last ones as much as the first.
func TestReservoirIsUniform(t *testing.T) {
	const (
		keys   = 100
		n      = 10
		trials = 20_000
	)
	in := lines(keys)
	rng := rand.New(rand.NewPCG(11, 12))
	counts := map[string]int{}
	for range trials {
		s, err := reservoir(strings.NewReader(in), n, rng)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range s.Keys {
			counts[k]++
		}
	}
	want := trials * n / keys // 2,000; the standard deviation is about 42
	for i := range keys {
		k := "k" + strconv.Itoa(i)
		if c := counts[k]; c < want*9/10 || c > want*11/10 {
			t.Errorf("%s kept %d times in %d trials, want about %d", k, c, trials, want)
		}
	}
}
