package prune

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
)

// TestCheckStale: the object is judged against its owner's row in the first table holding it;
// the group's other keys are missing; a newer writetime is stale on an object older than the
// scan, and not judged on one written since.
func TestCheckStale(t *testing.T) {
	guard := time.Now()
	old, fresh := guard.Add(-time.Hour), guard.Add(time.Second)
	meta := func(owner, wt string) map[string]string {
		m := map[string]string{blobstore.OwnerMeta: owner}
		if wt != "" {
			m[WriteTimeMeta] = wt
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		keys    []string
		wts     []int64
		obj     fakeObj
		stale   bool
		recent  bool
		key     string
		missing []string
	}{
		{"equal", []string{"a"}, []int64{100}, fakeObj{old, meta("a", "100")}, false, false, "a", nil},
		{"older", []string{"a"}, []int64{100}, fakeObj{old, meta("a", "99")}, true, false, "a", nil},
		{"no writetime", []string{"a"}, []int64{100}, fakeObj{old, meta("a", "")}, true, false, "a", nil},
		{"newer, written before the scan", []string{"a"}, []int64{100}, fakeObj{old, meta("a", "101")}, true, false, "a", nil},
		{"newer, written during the scan", []string{"a"}, []int64{100}, fakeObj{fresh, meta("a", "101")}, false, true, "a", nil},
		{"two keys, the second owns it", []string{"a", "b"}, []int64{300, 100}, fakeObj{old, meta("b", "100")}, false, false, "b", []string{"a"}},
		{"two keys, the owner's bytes older", []string{"a", "b"}, []int64{300, 100}, fakeObj{old, meta("a", "200")}, true, false, "a", []string{"b"}},
		{"two keys, none owns it", []string{"a", "b"}, []int64{100, 100}, fakeObj{old, meta("c", "100")}, false, false, "a", []string{"b"}},
		{"legacy owner record", []string{"a", "b"}, []int64{100, 100}, fakeObj{old, map[string]string{blobstore.LegacyOwnerMeta: "b", WriteTimeMeta: "100"}}, false, false, "b", []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBucket{objs: map[string]fakeObj{"p/x": tc.obj}}
			v, err := checkStale(context.Background(), b, group{s3key: "p/x", keys: tc.keys, wts: tc.wts}, guard)
			if err != nil {
				t.Fatal(err)
			}
			if v.stale != tc.stale || v.recent != tc.recent || v.key != tc.key || !slices.Equal(v.missing, tc.missing) {
				t.Errorf("stale %v recent %v key %q missing %q; want %v %v %q %q", v.stale, v.recent, v.key, v.missing, tc.stale, tc.recent, tc.key, tc.missing)
			}
		})
	}
}
