package blobstore

import "testing"

// An object's writetime decides whether a later message of its key may replace it: whatever the
// metadata holds that is not a writetime reads as 0, older than any known one.
func TestWriteTimeMeta(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta map[string]string
		want int64
	}{
		{"none (an older ferry)", map[string]string{OwnerMeta: "k"}, 0},
		{"set", map[string]string{WriteTimeMeta: WriteTimeValue(1733577600123456)}, 1733577600123456},
		{"cased by the server", map[string]string{"Ferry-Writetime": "12345"}, 12345},
		{"not a number", map[string]string{WriteTimeMeta: "soon"}, 0},
		{"negative", map[string]string{WriteTimeMeta: "-5"}, 0},
		{"empty", map[string]string{WriteTimeMeta: ""}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := writeTimeOf(tc.meta); got != tc.want {
				t.Errorf("writeTimeOf(%v) = %d, want %d", tc.meta, got, tc.want)
			}
		})
	}
	if v := WriteTimeValue(0); v != "" {
		t.Errorf("WriteTimeValue(0) = %q, want \"\" (unknown is not stored)", v)
	}
}
