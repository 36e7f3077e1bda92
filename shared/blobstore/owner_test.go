package blobstore

import (
	"strings"
	"testing"
)

func TestOwnerValue(t *testing.T) {
	for in, want := range map[string]string{"t01a.jpg": "t01a.jpg", "a b.jpg": "a b.jpg", "päth/ü.jpg": "p%C3%A4th/%C3%BC.jpg",
		"a\nb": "a%0Ab", "100%.jpg": "100%25.jpg", "%C3%A9": "%25C3%25A9", "é": "%C3%A9", " x": "%20x", "x ": "x%20",
		" a b ": "%20a%20b%20", "x\u00a0": "x%C2%A0", "\u3000x": "%E3%80%80x"} {
		if got := OwnerValue(in); got != want {
			t.Errorf("OwnerValue(%q) = %q, want %q", in, got, want)
		}
	}
	// Owners are compared by OwnerValue: two keys must never share one, and no value may have a
	// blank at either end (the SDK trims those when it reads metadata back).
	seen := map[string]string{}
	for _, k := range []string{"é", "%C3%A9", "a b", "a+b", "a%20b", "a\x00", "a%00", "x", "%78", " x", "x ", "%20x", "+x",
		"x\u00a0", "x%C2%A0", "\u2003x", "\u0085x"} {
		v := OwnerValue(k)
		if other, ok := seen[v]; ok {
			t.Errorf("keys %q and %q share the owner %q", other, k, v)
		}
		if v != strings.TrimSpace(v) {
			t.Errorf("OwnerValue(%q) = %q: blanks at an end", k, v)
		}
		seen[v] = k
	}
}

func TestOwnerOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta map[string]string
		key  string
		want Ownership
	}{
		{"none", nil, "k", OwnerNone},
		{"own", map[string]string{OwnerMeta: "k"}, "k", OwnerKey},
		{"own escaped", map[string]string{OwnerMeta: "%20k"}, " k", OwnerKey},
		{"other", map[string]string{OwnerMeta: "k"}, " k", OwnerOther},
		{"new record wins over legacy", map[string]string{OwnerMeta: "k", LegacyOwnerMeta: "j"}, "k", OwnerKey},
		{"legacy own", map[string]string{LegacyOwnerMeta: "k"}, "k", OwnerKey},
		{"legacy own with a bare %", map[string]string{LegacyOwnerMeta: "100%.jpg"}, "100%.jpg", OwnerKey},
		{"legacy other", map[string]string{LegacyOwnerMeta: "j"}, "k", OwnerOther},
		{"legacy escaped or literal: é", map[string]string{LegacyOwnerMeta: "%C3%A9"}, "é", OwnerAmbiguous},
		{"legacy escaped or literal: the literal", map[string]string{LegacyOwnerMeta: "%C3%A9"}, "%C3%A9", OwnerAmbiguous},
		{"legacy escaped, other key", map[string]string{LegacyOwnerMeta: "%C3%A9"}, "ü", OwnerOther},
		{"legacy read back trimmed", map[string]string{LegacyOwnerMeta: "x"}, "x ", OwnerAmbiguous},
		{"legacy escaped non-ASCII", map[string]string{LegacyOwnerMeta: "p%C3%A4th%2F%C3%BC.jpg"}, "päth/ü.jpg", OwnerAmbiguous},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := OwnerOf(tc.meta, tc.key); got != tc.want {
				t.Errorf("OwnerOf(%q, %q) = %d, want %d", tc.meta, tc.key, got, tc.want)
			}
		})
	}
}
