package producer

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name   string
		tokens []int64
		n      int
		want   int // ranges, 0: at least n
	}{
		{"no tokens: the whole ring", nil, 1, 1},
		{"no tokens, split", nil, 64, 64},
		{"one node", []int64{42}, 32, 0},
		{"two nodes, the local stack", []int64{-3074457345618258603, 3074457345618258602}, 64, 0},
		{"token at the ring's minimum", []int64{math.MinInt64, 0}, 8, 0},
		{"token at the ring's maximum", []int64{0, math.MaxInt64}, 8, 0},
		{"duplicate tokens", []int64{5, 5, -5}, 4, 0},
		{"more ranges than a node range has tokens", []int64{0, 1, 2, 3}, 16, 0},
		{"vnodes", randomTokens(256 * 3), 96, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := Split(tt.tokens, tt.n)
			checkRing(t, rs)
			if tt.want > 0 && len(rs) != tt.want {
				t.Errorf("%d ranges, want %d", len(rs), tt.want)
			}
			if tt.want == 0 && len(rs) < tt.n {
				t.Errorf("%d ranges, want at least %d", len(rs), tt.n)
			}
			// Every node token ends a range: each range has one replica set.
			ends := map[int64]bool{}
			for _, r := range rs {
				ends[r.End] = true
			}
			for _, tok := range tt.tokens {
				if tok != math.MinInt64 && !ends[tok] {
					t.Errorf("node token %d does not end a range", tok)
				}
			}
		})
	}
}

func TestSplitRandom(t *testing.T) {
	for i := range 200 {
		tokens := randomTokens(rand.IntN(20))
		rs := Split(tokens, 1+rand.IntN(300))
		if !t.Run("", func(t *testing.T) { checkRing(t, rs) }) {
			t.Fatalf("case %d: tokens %v", i, tokens)
		}
	}
}

// checkRing asserts rs cover (MinInt64, MaxInt64] in order with no gap or overlap, including the
// range that wraps around from the last node token.
func checkRing(t *testing.T, rs []checkpoint.Range) {
	t.Helper()
	if len(rs) == 0 {
		t.Fatal("no ranges")
	}
	if rs[0].Start != math.MinInt64 || rs[len(rs)-1].End != math.MaxInt64 {
		t.Fatalf("ranges run %d..%d, want the whole ring", rs[0].Start, rs[len(rs)-1].End)
	}
	var sum uint64
	for i, r := range rs {
		if r.Start >= r.End {
			t.Fatalf("range %d %v is empty", i, r)
		}
		if i > 0 && r.Start != rs[i-1].End {
			t.Fatalf("range %d %v does not start where %v ends", i, r, rs[i-1])
		}
		sum += r.Width()
	}
	if sum != math.MaxUint64 {
		t.Fatalf("ranges hold %d tokens, want %d", sum, uint64(math.MaxUint64))
	}
}

func randomTokens(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(rand.Uint64())
	}
	return out
}
