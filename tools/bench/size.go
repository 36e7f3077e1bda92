package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// maxObjectSize bounds a --sizes entry: the benchmark holds one body of each size in memory, and
// a blob above it is not what a capacity plan for images is about.
const maxObjectSize = 1 << 30

var units = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first, so "KiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9},
	{"b", 1},
}

// parseSize reads a byte count: "4096", "16KiB", "1MiB", "1.5MiB", "100kB" (binary units KiB, MiB,
// GiB; decimal kB, MB, GB; case-insensitive). The result is 1..maxObjectSize.
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	if t == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	var n int64
	if i, err := strconv.ParseInt(t, 10, 64); err == nil {
		if i > maxObjectSize/mult+1 { // overflow-safe; the range check below is exact
			return 0, fmt.Errorf("size %q: must be 1 byte to %s", s, formatSize(maxObjectSize))
		}
		n = i * mult
	} else {
		f, ferr := strconv.ParseFloat(t, 64)
		if ferr != nil || f != f || f < 0 || f > float64(maxObjectSize) {
			return 0, fmt.Errorf("size %q: want a byte count such as 4096, 16KiB or 1MiB", s)
		}
		n = int64(f * float64(mult))
	}
	if n < 1 || n > maxObjectSize {
		return 0, fmt.Errorf("size %q: must be 1 byte to %s", s, formatSize(maxObjectSize))
	}
	return n, nil
}

// parseSizes reads a comma-separated list of sizes, in the order given; duplicates are an error.
func parseSizes(s string) ([]int64, error) {
	var sizes []int64
	seen := map[int64]bool{}
	for f := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		n, err := parseSize(f)
		if err != nil {
			return nil, fmt.Errorf("--sizes: %w", err)
		}
		if seen[n] {
			return nil, fmt.Errorf("--sizes: %s is listed twice", formatSize(n))
		}
		seen[n] = true
		sizes = append(sizes, n)
	}
	if len(sizes) == 0 {
		return nil, fmt.Errorf("--sizes %q: at least one size is required", s)
	}
	return sizes, nil
}

// formatSize writes n in the largest binary unit that divides it: 16KiB, 1MiB, 1000.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}
