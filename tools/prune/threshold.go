package prune

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Threshold is --max-delete: a count of objects, or a percentage of the objects listed.
type Threshold struct {
	Count   int64
	Percent float64 // used when IsPercent
	// IsPercent says Percent applies; the count is then floor(listed × Percent / 100).
	IsPercent bool
}

// DefaultMaxDelete is --max-delete's default: 0.1% of the objects listed.
const DefaultMaxDelete = "0.1%"

// ParseThreshold reads "1000" or "0.5%".
func ParseThreshold(s string) (Threshold, error) {
	t := strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(t, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > 100 {
			return Threshold{}, fmt.Errorf("--max-delete %q: want a count (1000) or a percentage from 0%% to 100%% (0.1%%)", s)
		}
		return Threshold{Percent: v, IsPercent: true}, nil
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return Threshold{}, fmt.Errorf("--max-delete %q: want a count (1000) or a percentage from 0%% to 100%% (0.1%%)", s)
	}
	return Threshold{Count: n}, nil
}

// Of is the threshold as a count, for listed objects.
func (t Threshold) Of(listed int64) int64 {
	if !t.IsPercent {
		return t.Count
	}
	return int64(math.Floor(float64(listed)*t.Percent/100 + 1e-9)) // 1000 × 0.1% is 1, not 0.999…
}

func (t Threshold) String() string {
	if t.IsPercent {
		return strconv.FormatFloat(t.Percent, 'f', -1, 64) + "%"
	}
	return strconv.FormatInt(t.Count, 10)
}
