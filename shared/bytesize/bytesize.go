// Package bytesize reads and writes byte counts with units ("1MiB", "512MiB", "1.5GB") and
// provides them as command-line flags: every size flag of ferry takes units and prints its
// default with them.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

var units = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first, so "KiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"pib", 1 << 50},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"pb", 1e15},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// Parse reads a byte count: "1048576", "1MiB", "1.5 GiB", "30KiB", "2GB", "512m" (binary units
// KiB … PiB and K, M, G, T; decimal kB … PB; case-insensitive). Negative and fractional byte
// counts are errors; so is anything above 8 EiB.
func Parse(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if t == "" || err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(t, "xXpP_") {
		return 0, fmt.Errorf("%q is not a size: want bytes such as 1048576, 1MiB or 1.5GiB", s)
	}
	n := f * mult
	if n < 0 || n >= math.MaxInt64 {
		return 0, fmt.Errorf("%q: a size must be between 0 and 8EiB", s)
	}
	if n != math.Trunc(n) {
		return 0, fmt.Errorf("%q is %g bytes: a size is a whole number of bytes", s, n)
	}
	return int64(n), nil
}

// Format writes n in the largest binary unit that divides it exactly ("1MiB", "1536KiB"), or
// in bytes ("1000B"): what Format writes, Parse reads back to n.
func Format(n int64) string {
	for _, u := range []struct {
		unit string
		div  int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.div == 0 {
			return strconv.FormatInt(n/u.div, 10) + u.unit
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Value is a size flag's value: it parses units and prints them.
type Value struct{ n *int64 }

// Set parses s into the value.
func (v Value) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*v.n = n
	return nil
}

func (v Value) String() string {
	if v.n == nil {
		return ""
	}
	return Format(*v.n)
}

// Get returns the byte count.
func (v Value) Get() any { return *v.n }

// Flag is a size flag that stores its bytes in dest, with def as default and env as its
// environment variable ("" for none).
func Flag(name string, def int64, env string, dest *int64, usage string) *cli.GenericFlag {
	*dest = def
	f := &cli.GenericFlag{Name: name, Value: Value{dest}, Usage: usage, DefaultText: Format(def)}
	if env != "" {
		f.EnvVars = []string{env}
	}
	return f
}

// RateValue is a bytes-per-second flag's value: a size (units allowed) per second, kept as a
// float64 as the rate limiters take it.
type RateValue struct{ f *float64 }

// Set parses s ("200MB", "50MiB", "0" for none) into the value.
func (v RateValue) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*v.f = float64(n)
	return nil
}

func (v RateValue) String() string {
	if v.f == nil {
		return ""
	}
	return Format(int64(*v.f))
}

// Get returns the bytes per second.
func (v RateValue) Get() any { return *v.f }

// RateFlag is a bytes-per-second flag (0: no limit) that stores into dest.
func RateFlag(name, env string, dest *float64, usage string) *cli.GenericFlag {
	f := &cli.GenericFlag{Name: name, Value: RateValue{dest}, Usage: usage, DefaultText: "0: none"}
	if env != "" {
		f.EnvVars = []string{env}
	}
	return f
}

// Rate is the RateValue that stores into dest.
func Rate(dest *float64) RateValue { return RateValue{dest} }
