package keyrules

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ferry-migrate/ferry/shared/config"
)

// fuzzRuleSets are the rules FuzzMap checks every input against: the seed system's (as in
// deploy/local/ferry.yaml), and a permissive set with no pattern, a rewrite that can lengthen
// the key and a deeper template, where only the built-in checks stand between a key and S3.
var fuzzRuleSets = []struct {
	name  string
	rules config.KeyRules
	// re matches a valid output; group 1 is the hash prefix, group 2 the rewritten key.
	re      *regexp.Regexp
	hashLen int
}{
	{name: "seed", rules: seedRules, re: regexp.MustCompile(`^([0-9a-f]{2})/(.*)$`), hashLen: 2},
	{name: "permissive", rules: config.KeyRules{
		MaxLength: 1024,
		Rewrite:   []config.Rewrite{{Match: `^/d/`, Replace: `custom/`}, {Match: `x`, Replace: `xxxx`}},
		Template:  "{hash4}/photos/{key}",
	}, re: regexp.MustCompile(`^([0-9a-f]{4})/photos/(.*)$`), hashLen: 4},
}

// FuzzMap: Map never panics, and whatever it accepts is a usable S3 key: at most 1024 bytes, no
// empty, "." or ".." segment, the template filled with the hash of the rewritten key, and (for
// rules with a pattern) the rewritten key matching it. Whatever it rejects wraps ErrInvalid, so
// the fetcher dead-letters it as invalid_key instead of retrying.
//
//	go test -run '^$' -fuzz FuzzMap -fuzztime 60s ./shared/keyrules/
func FuzzMap(f *testing.F) {
	for _, s := range []string{
		"t01aaaaaaaaaaaaaaaaaaaaaaaa.jpg", "t01aaaaaaaaaaaaaaaaaaaaaaaa_1.jpg", "/d/banner.png", "/x/a.png",
		"a/../b.jpg", "a//b.jpg", "a/./b", "..", ".", "/", "", "_1.jpg", "x/_1.jpg", "a/.", "t01\x00.jpg",
		"\xef\xbb\xbft01.jpg", "\xff\xfe", "ünïcødé.jpg", "has space.jpg", "a\r\n", strings.Repeat("a", 1024),
		strings.Repeat("x", 300), "{key}{hash2}", "custom/../../etc/passwd",
	} {
		f.Add(s)
	}
	type compiled struct {
		*Rules
		re      *regexp.Regexp
		pattern *regexp.Regexp
		hashLen int
	}
	var sets []compiled
	for _, rs := range fuzzRuleSets {
		r, err := Compile(rs.rules)
		if err != nil {
			f.Fatalf("%s rules: %v", rs.name, err)
		}
		var p *regexp.Regexp
		if rs.rules.Pattern != "" {
			p = regexp.MustCompile(rs.rules.Pattern)
		}
		sets = append(sets, compiled{r, rs.re, p, rs.hashLen})
	}
	f.Fuzz(func(t *testing.T, key string) {
		for i, r := range sets {
			out, err := r.Map(key)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%s: Map(%q) error %v does not wrap ErrInvalid", fuzzRuleSets[i].name, key, err)
				}
				if out != "" {
					t.Fatalf("%s: Map(%q) returned %q with an error", fuzzRuleSets[i].name, key, out)
				}
				continue
			}
			name := fuzzRuleSets[i].name
			if again, err2 := r.Map(key); err2 != nil || again != out {
				t.Fatalf("%s: Map(%q) not deterministic: %q then %q, %v", name, key, out, again, err2)
			}
			// The source key passed the checks every stage relies on.
			if len(key) == 0 || len(key) > 1024 || !utf8.ValidString(key) {
				t.Fatalf("%s: Map accepted source key %q (%d bytes, valid UTF-8 %v)", name, key, len(key), utf8.ValidString(key))
			}
			for _, c := range key {
				if c < 0x20 || c == 0x7f {
					t.Fatalf("%s: Map accepted source key %q with control character %U", name, key, c)
				}
			}
			if len(out) > 1024 {
				t.Fatalf("%s: Map(%q) = %d bytes, over 1024", name, key, len(out))
			}
			for _, seg := range strings.Split(out, "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("%s: Map(%q) = %q has an empty, '.' or '..' segment", name, key, out)
				}
			}
			m := r.re.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("%s: Map(%q) = %q does not fill the template", name, key, out)
			}
			sum := md5.Sum([]byte(m[2]))
			if want := hex.EncodeToString(sum[:])[:r.hashLen]; m[1] != want {
				t.Fatalf("%s: Map(%q) = %q: hash prefix %s, want %s (md5 of the rewritten key)", name, key, out, m[1], want)
			}
			if r.pattern != nil && !r.pattern.MatchString(m[2]) {
				t.Fatalf("%s: Map(%q) = %q: rewritten key %q does not match the pattern", name, key, out, m[2])
			}
			if !utf8.ValidString(out) {
				t.Fatalf("%s: Map(%q) = %q is not valid UTF-8", name, key, out)
			}
		}
	})
}
