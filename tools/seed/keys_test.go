package seed

import (
	"regexp"
	"slices"
	"testing"
)

var (
	keyFormat   = regexp.MustCompile(`^t01[0-9a-f]{24}\.jpg$`)
	sizedFormat = regexp.MustCompile(`^t01[0-9a-f]{24}_s[0-9]+\.jpg$`)
)

func TestKeyFormat(t *testing.T) {
	tests := []struct {
		name string
		key  func(i int) string
		re   *regexp.Regexp
	}{
		{"seeded", func(i int) string { return Key(1, i) }, keyFormat},
		{"absent", func(i int) string { return AbsentKey(1, i) }, keyFormat},
		{"fallback", func(i int) string { return FallbackKey(1, i) }, keyFormat},
		{"sized", func(i int) string { return SizedKey(1, i, 3<<20) }, sizedFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 100 {
				if k := tt.key(i); !tt.re.MatchString(k) {
					t.Fatalf("key %d = %q, want %v", i, k, tt.re)
				}
			}
		})
	}
	if a, b := Key(1, 7), Key(1, 7); a != b || a == Key(2, 7) || a == Key(1, 8) {
		t.Error("Key must depend on seed and index, and on nothing else")
	}
}

func TestKeyDomainsDisjoint(t *testing.T) {
	k := PlanKeys(1, 2000, 50, 50, []int{0, 1, 1 << 20})
	seen := map[string]bool{}
	for _, key := range k.All() {
		if seen[key] {
			t.Fatalf("key %q twice", key)
		}
		seen[key] = true
	}
	if len(seen) != 2000+3+50+50 {
		t.Errorf("%d keys, want %d", len(seen), 2103)
	}
	again := PlanKeys(1, 2000, 50, 50, []int{0, 1, 1 << 20})
	if !slices.Equal(k.All(), again.All()) {
		t.Error("same parameters gave a different key list")
	}
	if slices.Equal(k.All()[:100], k.Main[:100]) {
		t.Error("key list is not shuffled")
	}
}

func TestSizeExplicit(t *testing.T) {
	tests := []struct {
		key  string
		want int
		ok   bool
	}{
		{"t01aaaaaaaaaaaaaaaaaaaaaaaa_s0.jpg", 0, true},
		{"t01aaaaaaaaaaaaaaaaaaaaaaaa_s3145728.jpg", 3145728, true},
		{"t01aaaaaaaaaaaaaaaaaaaaaaaa_s17825792", 17825792, true},
		{SizedKey(3, 1, 1048577), 1048577, true},
		{"t01aaaaaaaaaaaaaaaaaaaaaaaa.jpg", 0, false},
		{"t01aaaaaaaaaaaaaaaaaaaaaaaa_s.jpg", 0, false},
		{"t01aaaaaaaaaaaaaaaaaaaaaaaa_s12x.jpg", 0, false},
		{"t01aaaaaaaaaaaaaaaaaaaaaaaa_s99999999999.jpg", 0, false}, // over the cap: drawn instead
		{"_s", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			n, ok := explicitSize(tt.key)
			if n != tt.want || ok != tt.ok {
				t.Errorf("explicitSize = %d, %v; want %d, %v", n, ok, tt.want, tt.ok)
			}
			if ok && Size(tt.key) != tt.want {
				t.Errorf("Size = %d, want %d", Size(tt.key), tt.want)
			}
			if !ok && (Size(tt.key) < MinSize || Size(tt.key) > MaxSize) {
				t.Errorf("drawn Size = %d, outside %d..%d", Size(tt.key), MinSize, MaxSize)
			}
		})
	}
}

func TestSizeDistribution(t *testing.T) {
	const n = 10000
	sizes := make([]int, n)
	large := 0
	for i := range n {
		s := Size(Key(1, i))
		sizes[i] = s
		if s >= 1<<20 {
			large++
		}
	}
	slices.Sort(sizes)
	median := sizes[n/2]
	t.Logf("min %d, median %d, p90 %d, max %d, %d of %d at 1-2 MiB", sizes[0], median, sizes[n*9/10], sizes[n-1], large, n)
	if median < 20<<10 || median > 45<<10 {
		t.Errorf("median %d, want 20-45 KiB", median)
	}
	if sizes[0] < MinSize || sizes[n-1] > MaxSize {
		t.Errorf("sizes span %d..%d, want within %d..%d", sizes[0], sizes[n-1], MinSize, MaxSize)
	}
	if large < 20 || large > 90 { // 0.5% of 10,000 is 50
		t.Errorf("%d blobs of 1-2 MiB, want about 50", large)
	}
}

func TestContent(t *testing.T) {
	keys := []string{Key(1, 0), Key(1, 1), SizedKey(1, 0, 0), SizedKey(1, 1, 1), SizedKey(1, 2, 3<<20)}
	for _, k := range keys {
		t.Run(k, func(t *testing.T) {
			b := Content(k)
			if len(b) != Size(k) {
				t.Fatalf("len %d, Size %d", len(b), Size(k))
			}
			if b == nil {
				t.Fatal("nil content; a 0-byte blob is an empty slice")
			}
			if !slices.Equal(b, Content(k)) {
				t.Fatal("content differs between calls")
			}
			if !Matches(k, b) {
				t.Fatal("Matches(key, Content(key)) = false")
			}
			if len(b) > 0 {
				c := slices.Clone(b)
				c[len(c)-1] ^= 1
				if Matches(k, c) {
					t.Fatal("Matches accepted a changed last byte")
				}
				if Matches(k, b[:len(b)-1]) {
					t.Fatal("Matches accepted a short blob")
				}
			}
		})
	}
	if slices.Equal(Content(SizedKey(1, 0, 64)), Content(SizedKey(1, 1, 64))) {
		t.Error("two keys gave the same bytes")
	}
}

func BenchmarkContent(b *testing.B) {
	keys := make([]string, 1000)
	var total int
	for i := range keys {
		keys[i] = Key(1, i)
		total += Size(keys[i])
	}
	b.SetBytes(int64(total / len(keys)))
	b.ResetTimer()
	for i := range b.N {
		_ = Content(keys[i%len(keys)])
	}
}

func BenchmarkKey(b *testing.B) {
	for i := range b.N {
		_ = Key(1, i)
	}
}
