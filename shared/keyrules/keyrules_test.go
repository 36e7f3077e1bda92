package keyrules

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferry-migrate/ferry/shared/config"
)

// The seed system's rules, as in deploy/local/ferry.yaml: "/d/" custom keys go under custom/, a
// "_1" suffix names the same image, keys are spread by a two-hex-digit hash prefix.
var seedRules = config.KeyRules{
	MaxLength: 1024,
	Pattern:   `^[A-Za-z0-9][A-Za-z0-9/_.-]*$`,
	Rewrite: []config.Rewrite{
		{Match: `^/d/`, Replace: `custom/`},
		{Match: `_1(\.[a-z]+)$`, Replace: `$1`},
	},
	Template: "{hash2}/{key}",
}

func TestMap(t *testing.T) {
	r, err := Compile(seedRules)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key     string
		wantKey string // after the hash prefix
		invalid bool
	}{
		{key: "t01aaaaaaaaaaaaaaaaaaaaaaaa.jpg", wantKey: "t01aaaaaaaaaaaaaaaaaaaaaaaa.jpg"},
		{key: "t01aaaaaaaaaaaaaaaaaaaaaaaa_1.jpg", wantKey: "t01aaaaaaaaaaaaaaaaaaaaaaaa.jpg"},
		{key: "/d/banner.png", wantKey: "custom/banner.png"},
		{key: "/x/banner.png", invalid: true}, // leading slash survives: fails the pattern
		{key: "has space.jpg", invalid: true},
		{key: "a/../b.jpg", invalid: true},
		{key: "a//b.jpg", invalid: true},
		{key: "", invalid: true},
		{key: "bad\x00.jpg", invalid: true},
		{key: string([]byte{0xff, 0xfe}), invalid: true},
		{key: strings.Repeat("a", 1025), invalid: true},
	}
	for _, tt := range tests {
		got, err := r.Map(tt.key)
		if tt.invalid {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Map(%q) = %q, %v; want ErrInvalid", tt.key, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Map(%q): %v", tt.key, err)
			continue
		}
		if len(got) < 3 || got[2] != '/' || got[3:] != tt.wantKey {
			t.Errorf("Map(%q) = %q, want xx/%s", tt.key, got, tt.wantKey)
		}
	}
}

func TestContentType(t *testing.T) {
	r, _ := Compile(config.KeyRules{})
	for key, want := range map[string]string{"a.jpg": "image/jpeg", "a.png": "image/png", "a": "application/octet-stream"} {
		if got := r.ContentType(key); got != want {
			t.Errorf("ContentType(%q) = %q, want %q", key, got, want)
		}
	}
}

// TestMapReserved: no key maps under the manifests' prefix (a key's object and a manifest segment
// never meet), wherever the rules would put it; keys beside it still map.
func TestMapReserved(t *testing.T) {
	j, err := config.Parse([]byte("source: {targets: [{hosts: [h], table: k.t}]}\ndestination: {bucket: bkt}\nkeys: {template: '{key}'}\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile(j.Keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key     string
		invalid bool
	}{
		{"ferry-manifests/default/done/00000000000000000001.csv.gz", true},
		{"ferry-manifests/x", true},
		{"ferry-manifests", false},
		{"ferry-manifestsx/y", false},
		{"a/ferry-manifests/y", false},
	} {
		_, err := r.Map(tc.key)
		if got := errors.Is(err, ErrInvalid); got != tc.invalid {
			t.Errorf("Map(%q): %v, want invalid %v", tc.key, err, tc.invalid)
		}
	}
	// Manifests in a bucket of their own reserve nothing in the destination.
	j.Manifest.Bucket = "other"
	j.Keys.Reserved = nil
	j.Defaults()
	if len(j.Keys.Reserved) != 0 {
		t.Errorf("manifests in another bucket reserve %v", j.Keys.Reserved)
	}
}
