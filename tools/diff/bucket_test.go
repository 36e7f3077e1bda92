package diff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
)

// fakeBucket is a bucket's keys, listed as S3 would (key order, StartAfter exclusive).
type fakeBucket []string // sorted

func (f fakeBucket) ListRange(_ context.Context, _, prefix, after, upTo string, fn func(string, int64) error) error {
	for _, k := range f {
		if !strings.HasPrefix(k, prefix) || (after != "" && k <= after) || (upTo != "" && k > upTo) {
			continue
		}
		if err := fn(k, 1); err != nil {
			return err
		}
	}
	return nil
}

func (f fakeBucket) CommonPrefixes(_ context.Context, _, prefix, delim string) ([]string, error) {
	var ps []string
	for _, k := range f {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if i := strings.Index(rest, delim); i >= 0 {
				if p := prefix + rest[:i+1]; !slices.Contains(ps, p) {
					ps = append(ps, p)
				}
			}
		}
	}
	return ps, nil
}

func testRules(t *testing.T, template string) *keyrules.Rules {
	t.Helper()
	r, err := keyrules.Compile(config.KeyRules{MaxLength: 1024, Pattern: `^[A-Za-z0-9][A-Za-z0-9/_.-]*$`,
		Rewrite: []config.Rewrite{{Match: `_1(\.[a-z]+)$`, Replace: "$1"}}, Template: template})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBucketDiff(t *testing.T) {
	for _, c := range []struct {
		name, template, prefix string
		budget                 int64
	}{
		{"hash folders", "p/{hash2}/{key}", "p/", 1 << 20},
		{"hash folders, spilled", "p/{hash2}/{key}", "p/", 2 << 10},
		{"flat", "flat/{key}", "flat/", 1 << 20},
		{"flat, spilled", "flat/{key}", "flat/", 2 << 10},
		{"whole bucket", "{key}", "", 4 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			rules := testRules(t, c.template)
			r := rand.New(rand.NewPCG(3, 4))
			var src strings.Builder
			var bucket fakeBucket
			wantMissing := map[string]bool{}
			present := map[string]bool{}
			for i := range 2000 {
				key := fmt.Sprintf("t01%024x.jpg", r.Uint64())
				if i%5 == 0 {
					key = strings.ToUpper(key[:4]) + key[4:] // other first letters: other ranges
				}
				fmt.Fprintf(&src, "%s\r\n", key)
				s3key, err := rules.Map(key)
				if err != nil {
					t.Fatal(err)
				}
				if i%10 == 0 {
					wantMissing[key] = true
				} else {
					bucket = append(bucket, s3key)
					present[key] = true
				}
				if i%7 == 0 {
					fmt.Fprintf(&src, "%s\n", key) // a duplicate
				}
			}
			// "_1" keys map to the same object as their plain key.
			src.WriteString("t01aa_1.jpg\nt01aa.jpg\n\n")
			aa, _ := rules.Map("t01aa.jpg")
			bucket = append(bucket, aa, c.prefix+"zz-not-in-the-source", c.prefix+"\x01odd", c.prefix+"with\nnewline")
			src.WriteString("bad key\n../up\n")
			slices.Sort(bucket)

			dir := t.TempDir()
			list := filepath.Join(dir, "source.txt")
			os.WriteFile(list, []byte(src.String()), 0o644)
			d := &differ{out: dir, tmp: t.TempDir(), budget: c.budget}
			res, err := d.bucketDiff(context.Background(), list, rules, bucket, "b", c.prefix, 4, MissingInS3)
			if err != nil {
				t.Fatalf("bucketDiff: %v", err)
			}
			got := readResult(t, filepath.Join(dir, MissingInS3))
			var want []string
			for k := range wantMissing {
				want = append(want, k)
			}
			// Sorted by S3 key, not by source key.
			slices.SortFunc(want, func(a, b string) int {
				ma, _ := rules.Map(a)
				mb, _ := rules.Map(b)
				return strings.Compare(ma, mb)
			})
			if !slices.Equal(got, want) {
				t.Errorf("missing-in-s3: %d keys %q, want %d %q", len(got), trunc(got), len(want), trunc(want))
			}
			bad := readResult(t, filepath.Join(dir, InvalidKeys))
			if len(bad) != 2 || !strings.HasPrefix(bad[0], "bad key\t") || !strings.Contains(bad[0], "invalid key") || !strings.HasPrefix(bad[1], "../up\t") {
				t.Errorf("invalid-keys = %q", bad)
			}
			if res.Missing != int64(len(want)) || res.Present != int64(len(present))+2 || res.Invalid != 2 || res.Listed != int64(len(bucket))-1 {
				t.Errorf("result %+v: want missing %d, present %d, invalid 2, listed %d", res, len(want), len(present)+2, len(bucket)-1)
			}
		})
	}
}

func TestListRanges(t *testing.T) {
	// Whatever the split points, the ranges cover every key once.
	bucket := fakeBucket{"a", "p/", "p/!", "p/0", "p/0/x", "p/00", "p/9/y", "p/z", "p/~~", "p/\xff", "q"}
	for _, prefix := range []string{"p/", "", "p/0"} {
		ranges, err := listRanges(context.Background(), bucket, "b", prefix)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range ranges {
			bucket.ListRange(context.Background(), "b", prefix, r[0], r[1], func(k string, _ int64) error {
				got = append(got, k)
				return nil
			})
		}
		var want []string
		for _, k := range bucket {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("prefix %q: ranges %q list %q, want %q", prefix, ranges, got, want)
		}
	}
}
