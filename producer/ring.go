package producer

import (
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

// The Murmur3 ring: tokens are int64, and a range (Start, End] holds the keys whose token t has
// Start < t <= End. No key has the token math.MinInt64 (Murmur3Partitioner maps it to MaxInt64),
// so (MinInt64, MaxInt64] is the whole ring.
const (
	ringMin = math.MinInt64
	ringMax = math.MaxInt64
)

// ParseTokens parses the tokens Cassandra reports (system.local and system.peers) as strings.
func ParseTokens(s []string) ([]int64, error) {
	out := make([]int64, 0, len(s))
	for _, t := range s {
		v, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("token %q: not a Murmur3 token (only Murmur3Partitioner is supported): %w", t, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Split cuts the whole ring into about n ranges, sorted, with no gap and no overlap. It cuts at
// every node token first, so each range has one replica set (a range query then touches the
// fewest nodes), splitting the range that wraps around the ring's end, (last token, first token],
// into (last, MaxInt64] and (MinInt64, first]. Each node range then gets a share of n in
// proportion to its width, rounded up, at least one.
func Split(tokens []int64, n int) []checkpoint.Range {
	n = max(n, 1)
	cuts := slices.Clone(tokens)
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	// Boundaries of the node ranges: MinInt64, the node tokens, MaxInt64.
	var parts []checkpoint.Range
	prev := int64(ringMin)
	for _, c := range append(cuts, ringMax) {
		if c > prev {
			parts = append(parts, checkpoint.Range{Start: prev, End: c})
			prev = c
		}
	}
	total := new(big.Float).SetUint64(math.MaxUint64)
	var out []checkpoint.Range
	for _, p := range parts {
		share, _ := new(big.Float).Quo(new(big.Float).SetUint64(p.Width()), total).Float64()
		k := uint64(max(1, int(math.Ceil(share*float64(n)-1e-9))))
		out = append(out, divide(p, k)...)
	}
	return out
}

// divide cuts r into k ranges of about equal width (fewer if r is narrower than k tokens).
func divide(r checkpoint.Range, k uint64) []checkpoint.Range {
	w := r.Width()
	k = max(min(k, w), 1)
	step := w / k
	out := make([]checkpoint.Range, 0, k)
	start := r.Start
	for i := uint64(1); i < k; i++ {
		end := int64(uint64(r.Start) + i*step)
		out = append(out, checkpoint.Range{Start: start, End: end})
		start = end
	}
	return append(out, checkpoint.Range{Start: start, End: r.End})
}

// covered is the fraction of the ring's tokens in done, for an ETA.
func covered(done uint64) float64 {
	return float64(done) / float64(math.MaxUint64)
}
