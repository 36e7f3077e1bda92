package prune

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
)

// Issue 14 adversary tests: ways prune could delete a live key's object, or prove a cut-over
// that does not hold.

func compileRules(t *testing.T, template string) *keyrules.Rules {
	t.Helper()
	r, err := keyrules.Compile(config.KeyRules{MaxLength: 1024, Template: template})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ferryObj(mod time.Time, owner string, wt int64) fakeObj {
	return fakeObj{mod, map[string]string{blobstore.OwnerMeta: owner, WriteTimeMeta: strconv.FormatInt(wt, 10)}}
}

// TestAdversaryQuarantineOverwritesLive: the quarantine destination of a candidate (PREFIX +
// its key) is also where the key rules put another, live, source key. The server-side copy
// replaces that key's object with the pruned bytes. The job file's own example layout (p/{key}
// with --quarantine p/q/) and a template without a fixed prefix both allow it.
func TestAdversaryQuarantineOverwritesLive(t *testing.T) {
	for _, tc := range []struct {
		name, template, quarantine string
		live, deleted              string // source keys: live has an object at quarantine+map(deleted)
	}{
		{"prefix p/, quarantine p/q/", "p/{key}", "p/q/", "q/p/x", "x"},
		{"no fixed prefix, quarantine pruned/", "{key}", "pruned/", "pruned/x", "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := compileRules(t, tc.template)
			old := time.Now().Add(-time.Hour)
			dead, _ := rules.Map(tc.deleted)
			liveObj, _ := rules.Map(tc.live)
			if liveObj != tc.quarantine+dead {
				t.Fatalf("setup: %q maps to %q, not the quarantine destination %q", tc.live, liveObj, tc.quarantine+dead)
			}
			src := fakeSource{rows: []Row{{Key: []byte(tc.live), WriteTime: 100}}}
			b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{
				dead:    ferryObj(old, tc.deleted, 50), // its source key is gone: the candidate
				liveObj: ferryObj(old, tc.live, 100),   // the live key's object
			}}
			o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: Prefix(tc.template), Quarantine: tc.quarantine,
				Delete: true, MaxDelete: Threshold{Count: 10}, Listers: 1, Workers: 1}
			if _, err := Run(context.Background(), src, b, rules, &fakeRecorder{}, o); err != nil {
				t.Logf("run: %v", err)
			}
			got, ok := b.objs[liveObj]
			if !ok || got.meta[blobstore.OwnerMeta] != tc.live {
				t.Errorf("live key %q's object %s now holds %v (owner %q): overwritten by the quarantine copy of %s",
					tc.live, liveObj, ok, got.meta[blobstore.OwnerMeta], dead)
			}
		})
	}
}

// TestAdversaryForeignObjects: a template without a fixed prefix ({hash2}/{key}) lists the whole
// bucket. Objects ferry did not write (no owner record), and objects of another job (an owner
// whose key the rules put elsewhere), are candidates; under the default 0.1% of a large listing
// they are deleted. The uploader never overwrites an unowned object; prune deletes it.
func TestAdversaryForeignObjects(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		obj       fakeObj
	}{
		{"not written by ferry", "backups/db.sql", fakeObj{meta: map[string]string{}}},
		{"another job's object", "thumbs/k5", fakeObj{meta: map[string]string{blobstore.OwnerMeta: "k5", WriteTimeMeta: "1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const template = "{hash2}/{key}"
			rules := compileRules(t, template)
			old := time.Now().Add(-time.Hour)
			var rows []Row
			b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{}}
			for i := range 1000 {
				k := fmt.Sprintf("k%d", i)
				s3, err := rules.Map(k)
				if err != nil {
					t.Fatal(err)
				}
				rows = append(rows, Row{Key: []byte(k), WriteTime: 100})
				b.objs[s3] = ferryObj(old, k, 100)
			}
			tc.obj.mod = old
			b.objs[tc.key] = tc.obj
			th, err := ParseThreshold(DefaultMaxDelete)
			if err != nil {
				t.Fatal(err)
			}
			o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: Prefix(template), Delete: true,
				MaxDelete: th, Listers: 2, Workers: 2}
			if _, err := Run(context.Background(), fakeSource{rows: rows}, b, rules, &fakeRecorder{}, o); err != nil {
				t.Logf("run: %v", err)
			}
			if _, ok := b.objs[tc.key]; !ok {
				t.Errorf("%s (%s) deleted by prune of a job whose rules could not have written it", tc.key, tc.name)
			}
		})
	}
}

// racingBucket: an upload of the candidate's key (re-inserted at the source after the scan read
// it) lands just before prune's DELETE: after its HEAD (the LastModified guard), or after its
// server-side copy to the quarantine prefix (which is conditional on the ETag HEAD saw, so a
// rewrite before it would fail it).
type racingBucket struct {
	*fakeBucket
	key string
}

func (b *racingBucket) upload() {
	b.mu.Lock()
	b.objs[b.key] = ferryObj(time.Now(), "x", 5000) // the uploader's PUT of the new row
	b.mu.Unlock()
}

func (b *racingBucket) Copy(ctx context.Context, src, dst, etag string) error {
	err := b.fakeBucket.Copy(ctx, src, dst, etag)
	if err == nil && src == b.key {
		b.upload()
	}
	return err
}

func (b *racingBucket) Delete(ctx context.Context, key, etag string) error {
	if key == b.key && len(b.copied) == 0 {
		b.upload() // no quarantine: the PUT lands between the HEAD and the DELETE
	}
	return b.fakeBucket.Delete(ctx, key, etag)
}

// TestAdversaryDeleteRacesUpload: prune's DELETE is unconditional, so an object rewritten after
// its HEAD (the LastModified guard) is deleted anyway. The new object may already be verified
// (DONE): the live key is then lost without a trace but the PRUNED record.
func TestAdversaryDeleteRacesUpload(t *testing.T) {
	for _, quarantine := range []string{"", "quarantine/"} {
		t.Run("quarantine="+quarantine, func(t *testing.T) {
			rules := compileRules(t, "p/{key}")
			old := time.Now().Add(-time.Hour)
			fb := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{"p/x": ferryObj(old, "x", 100)}}
			b := &racingBucket{fakeBucket: fb, key: "p/x"}
			o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: "p/", Quarantine: quarantine, Delete: true,
				MaxDelete: Threshold{Count: 10}, Listers: 1, Workers: 1}
			if _, err := Run(context.Background(), fakeSource{}, b, rules, &fakeRecorder{}, o); err != nil {
				t.Logf("run: %v", err)
			}
			got, ok := fb.objs["p/x"]
			if !ok || got.meta[WriteTimeMeta] != "5000" {
				t.Errorf("the upload that landed after prune's HEAD is gone (present %v): deleted unconditionally", ok)
			}
		})
	}
}

// TestAdversaryStaleBelowFloor: the proof checks staleness only for source rows whose writetime
// is at or after pass 1's start. A writetime is the writing client's clock: a writer behind
// ferry's clock, or one that writes USING TIMESTAMP in the past (a replay, an app's own clock),
// rewrites a row after pass 1 read it with a writetime under the floor. The delta passes' floor
// (less --since-margin) may miss it too; prune does not look, and PROVEN stands over old bytes.
// Fixed for a clock behind by less than the margin (the floor is pass 1's start less the largest
// --since-margin, at least MinStaleMargin); a timestamp in the past beyond it is the documented
// residual, which --check-all (Floor 0: a HEAD per key) catches.
func TestAdversaryStaleBelowFloor(t *testing.T) {
	floor := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixMicro()
	for _, tc := range []struct {
		name     string
		sourceWT int64 // the row as the source holds it now
		objectWT int64 // what pass 1 uploaded
		checkAll bool  // --check-all: no floor
	}{
		{"writer clock 2 minutes behind ferry's", floor - (2 * time.Minute).Microseconds(), floor - (time.Hour).Microseconds(), false},
		{"USING TIMESTAMP of 2020 after pass 1 read 2019's bytes, --check-all", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(),
			time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := compileRules(t, "p/{key}")
			old := time.Now().Add(-time.Hour)
			src := fakeSource{rows: []Row{{Key: []byte("k"), WriteTime: tc.sourceWT}}}
			b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{"p/k": ferryObj(old, "k", tc.objectWT)}}
			o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: "p/", MaxDelete: Threshold{Count: 10},
				Listers: 1, Workers: 1, Floor: floor}
			if tc.checkAll {
				o.Floor = 0
			}
			res, err := Run(context.Background(), src, b, rules, &fakeRecorder{}, o)
			if err != nil {
				t.Fatal(err)
			}
			p := proofOf(res, o, "LOCAL_QUORUM", "LOCAL_QUORUM", []string{"t:ks.t"})
			if res.Stale != 1 || p.Proven() {
				t.Errorf("object wt %d, source wt %d: stale %d, checked %d, proven %v; want the object stale and no proof",
					tc.objectWT, tc.sourceWT, res.Stale, res.Checked, p.Proven())
			}
		})
	}
}

// TestAdversaryFallbackOlder: two read targets of different tables (a hot table and its
// archive, or an old and a new cluster). The key's row left the first table; the second holds
// its bytes with an older writetime. The fetcher now reads the second's bytes, the uploader
// calls them superseded by the object (the first table's deleted bytes, a newer writetime), and
// prune compares the same writetimes across tables: S3 keeps bytes the source no longer has,
// and the proof holds.
func TestAdversaryFallbackOlder(t *testing.T) {
	rules := compileRules(t, "p/{key}")
	old := time.Now().Add(-time.Hour)
	src := fakeSource{rows: []Row{{Key: []byte("k"), WriteTime: 500, Target: 1}}} // target 0's row is gone
	b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{"p/k": ferryObj(old, "k", 1000)}}
	o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: "p/", MaxDelete: Threshold{Count: 10},
		Listers: 1, Workers: 1}
	res, err := Run(context.Background(), src, b, rules, &fakeRecorder{}, o)
	if err != nil {
		t.Fatal(err)
	}
	if p := proofOf(res, o, "LOCAL_QUORUM", "LOCAL_QUORUM", nil); p.Proven() {
		t.Errorf("PROVEN while S3 holds the first table's deleted bytes (wt 1000) and the source's are the second table's (wt 500)")
	}
}

// TestAdversaryTwoKeysOneObject: two source keys the rules map to one S3 key (a rewrite folds
// "_1" away). The uploader dead-letters the second when its bytes differ, so its bytes are not
// in S3; prune sees one object for the group, counts neither key missing, checks only the
// owner's writetime, and proves the cut-over.
func TestAdversaryTwoKeysOneObject(t *testing.T) {
	rules, err := keyrules.Compile(config.KeyRules{MaxLength: 1024, Template: "p/{key}",
		Rewrite: []config.Rewrite{{Match: `_1\.jpg$`, Replace: ".jpg"}}})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	src := fakeSource{rows: []Row{{Key: []byte("x.jpg"), WriteTime: 100}, {Key: []byte("x_1.jpg"), WriteTime: 200}}}
	b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{"p/x.jpg": ferryObj(old, "x.jpg", 100)}}
	o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: "p/", MaxDelete: Threshold{Count: 10},
		Listers: 1, Workers: 1}
	res, err := Run(context.Background(), src, b, rules, &fakeRecorder{}, o)
	if err != nil {
		t.Fatal(err)
	}
	if p := proofOf(res, o, "LOCAL_QUORUM", "LOCAL_QUORUM", nil); p.Proven() {
		t.Errorf("PROVEN while x_1.jpg (wt 200, newer) has no object of its own: p/x.jpg holds x.jpg's bytes (missing %d, stale %d)", res.Missing, res.Stale)
	}
}

// writerSource is a source that a writer inserts a key into once the scan has read past it.
type writerSource struct {
	fakeSource
	after func()
}

func (s writerSource) Scan(ctx context.Context, fn func(Row) error) error {
	err := s.fakeSource.Scan(ctx, fn)
	s.after()
	return err
}

// TestAdversaryS3ClockBehind: the LastModified guard compares S3's clock with this host's. With
// S3's clock 5 minutes behind (an S3-compatible server on a host whose NTP is off, or this host
// ahead), a key inserted after the scan read its range and uploaded during the scan carries a
// LastModified before the guard (scan start less the default --clock-skew 1m): a candidate,
// deleted though its key is live. S3 can tell its own time (the Date of a response, or the
// LastModified of a marker PUT at the scan's start).
func TestAdversaryS3ClockBehind(t *testing.T) {
	rules := compileRules(t, "p/{key}")
	s3Now := func() time.Time { return time.Now().Add(-5 * time.Minute) }
	b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{"p/a": ferryObj(s3Now().Add(-time.Hour), "a", 100)},
		now: s3Now} // S3 tells its own time (Bucket.Clock)
	src := writerSource{fakeSource: fakeSource{rows: []Row{{Key: []byte("a"), WriteTime: 100}}}, after: func() {
		b.mu.Lock()
		b.objs["p/new"] = ferryObj(s3Now(), "new", time.Now().UnixMicro()) // inserted, fetched and uploaded during the scan
		b.mu.Unlock()
	}}
	o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: "p/", Delete: true, MaxDelete: Threshold{Count: 10},
		Listers: 1, Workers: 1, ClockSkew: time.Minute}
	if _, err := Run(context.Background(), src, b, rules, &fakeRecorder{}, o); err != nil {
		t.Logf("run: %v", err)
	}
	if _, ok := b.objs["p/new"]; !ok {
		t.Errorf("p/new, uploaded during the scan for a live key, deleted: S3's clock is 5m behind and --clock-skew is 1m")
	}
}
