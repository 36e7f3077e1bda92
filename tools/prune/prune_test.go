package prune

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
)

func TestParseThreshold(t *testing.T) {
	for _, tc := range []struct {
		in     string
		listed int64
		want   int64
		bad    bool
	}{
		{"0.1%", 1000, 1, false},
		{"0.1%", 999, 0, false},
		{"0.1%", 150_000_000_000, 150_000_000, false},
		{"5 %", 200, 10, false},
		{"100%", 7, 7, false},
		{"0", 1000, 0, false},
		{"1000", 5, 1000, false},
		{"-1", 0, 0, true},
		{"101%", 0, 0, true},
		{"ten", 0, 0, true},
		{"%", 0, 0, true},
		{"", 0, 0, true},
	} {
		th, err := ParseThreshold(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("ParseThreshold(%q): err %v, want bad=%v", tc.in, err, tc.bad)
			continue
		}
		if !tc.bad && th.Of(tc.listed) != tc.want {
			t.Errorf("ParseThreshold(%q).Of(%d) = %d, want %d", tc.in, tc.listed, th.Of(tc.listed), tc.want)
		}
	}
}

func TestCheckConsistency(t *testing.T) {
	for _, tc := range []struct {
		flag, job, want string
		bad             bool
	}{
		{"", "", "QUORUM", false}, // config.DefaultPruneConsistency
		{"", "QUORUM", "QUORUM", false},
		{"local_quorum", "LOCAL_QUORUM", "LOCAL_QUORUM", false},
		{"ALL", "LOCAL_QUORUM", "ALL", false},
		{"QUORUM", "LOCAL_QUORUM", "QUORUM", false},
		{"LOCAL_ONE", "LOCAL_QUORUM", "", true},
		{"ONE", "LOCAL_QUORUM", "", true},
		{"LOCAL_QUORUM", "ALL", "", true},
		{"ANY", "ANY", "", true},
		{"SOME", "LOCAL_QUORUM", "", true},
	} {
		c := Config{Consistency: tc.flag}
		err := c.checkConsistency(tc.job)
		if (err != nil) != tc.bad || (!tc.bad && c.Consistency != tc.want) {
			t.Errorf("--consistency %q, job %q: %q, %v; want %q (refused: %v)", tc.flag, tc.job, c.Consistency, err, tc.want, tc.bad)
		}
		if tc.bad && err != nil && tc.flag == "LOCAL_ONE" && !strings.Contains(err.Error(), "weaker") {
			t.Errorf("refusal does not say why: %v", err)
		}
	}
}

func TestPrefix(t *testing.T) {
	for tmpl, want := range map[string]string{"{key}": "", "{hash2}/{key}": "", "photos/{hash4}/{key}": "photos/", "a/b/{key}.jpg": "a/b/"} {
		if got := Prefix(tmpl); got != want {
			t.Errorf("Prefix(%q) = %q, want %q", tmpl, got, want)
		}
	}
}

// fakeSource gives rows, then fails with err if set.
type fakeSource struct {
	rows []Row
	err  error
}

func (s fakeSource) Scan(_ context.Context, fn func(Row) error) error {
	for _, r := range s.rows {
		if err := fn(r); err != nil {
			return err
		}
	}
	return s.err
}

// Holds: the rows stand for every read target.
func (s fakeSource) Holds(_ context.Context, key string) (bool, error) {
	for _, r := range s.rows {
		if string(r.Key) == key && !r.Null {
			return true, nil
		}
	}
	return false, nil
}

type fakeObj struct {
	mod  time.Time
	meta map[string]string
}

// fakeBucket is a bucket in memory; inspected may change an object's time after the listing.
type fakeBucket struct {
	mu        sync.Mutex
	objs      map[string]fakeObj
	deleted   []string
	copied    map[string]string
	listErr   error
	afterList func(key string) time.Time // the time Inspect sees, if set
	now       func() time.Time           // S3's clock, if not this host's
}

// etag changes with each write of key (its time and writetime).
func (o fakeObj) etag(key string) string {
	return fmt.Sprintf("e-%s-%d-%s", key, o.mod.UnixNano(), o.meta[WriteTimeMeta])
}

func (b *fakeBucket) Clock(context.Context) (time.Time, error) {
	if b.now != nil {
		return b.now(), nil
	}
	return time.Now(), nil
}

func (b *fakeBucket) Ranges(context.Context, string) ([][2]string, error) {
	return [][2]string{{"", "m"}, {"m", ""}}, nil
}

func (b *fakeBucket) ListObjects(_ context.Context, prefix, after, upTo string, fn func(blobstore.Object) error) error {
	if b.listErr != nil {
		return b.listErr
	}
	b.mu.Lock()
	var keys []string
	for k := range b.objs {
		if strings.HasPrefix(k, prefix) && k > after && (upTo == "" || k <= upTo) {
			keys = append(keys, k)
		}
	}
	b.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn(blobstore.Object{Key: k, LastModified: b.objs[k].mod}); err != nil {
			return err
		}
	}
	return nil
}

func (b *fakeBucket) Inspect(_ context.Context, key string) (blobstore.Info, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objs[key]
	if !ok {
		return blobstore.Info{}, blobstore.ErrNotFound
	}
	mod := o.mod
	if b.afterList != nil {
		mod = b.afterList(key)
	}
	return blobstore.Info{Key: key, ETag: o.etag(key), LastModified: mod, Metadata: o.meta}, nil
}

func (b *fakeBucket) Copy(_ context.Context, src, dst, etag string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if etag != b.objs[src].etag(src) {
		return errors.New("etag")
	}
	if _, ok := b.objs[dst]; ok {
		return blobstore.ErrExists
	}
	b.objs[dst] = b.objs[src]
	b.copied[src] = dst
	return nil
}

func (b *fakeBucket) Delete(_ context.Context, key, etag string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.objs[key]; ok && etag != "" && etag != o.etag(key) {
		return blobstore.ErrChanged
	}
	delete(b.objs, key)
	b.deleted = append(b.deleted, key)
	return nil
}

type fakeRecorder struct {
	mu   sync.Mutex
	recs []Record
	err  error
}

func (r *fakeRecorder) Record(_ context.Context, rec Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.recs = append(r.recs, rec)
	return nil
}

// fixture: source keys a, b, c, d (d's blob NULL, e only in the second target); objects p/a,
// p/b, p/e, p/x (old: a candidate), p/y (written during the scan), p/q/z (quarantined earlier),
// and other/w outside the prefix.
func fixture(t *testing.T) (fakeSource, *fakeBucket, *keyrules.Rules) {
	t.Helper()
	rules, err := keyrules.Compile(config.KeyRules{MaxLength: 1024, Template: "p/{key}"})
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	src := fakeSource{rows: []Row{
		{Key: []byte("a"), WriteTime: 100}, {Key: []byte("b"), WriteTime: 200}, {Key: []byte("c"), WriteTime: 300},
		{Key: []byte("d"), Null: true}, {Key: []byte("e"), WriteTime: 50, Target: 1}, {Key: []byte("a"), WriteTime: 999, Target: 1},
		{Key: []byte("bad key\x01"), WriteTime: 1},
	}}
	wt := func(v string) map[string]string {
		return map[string]string{WriteTimeMeta: v, blobstore.OwnerMeta: "x"}
	}
	b := &fakeBucket{copied: map[string]string{}, objs: map[string]fakeObj{
		"p/a": {old, wt("100")}, "p/b": {old, wt("150")}, "p/e": {old, nil},
		"p/x": {old, map[string]string{blobstore.OwnerMeta: "x"}}, "p/y": {time.Now().Add(time.Hour), nil},
		"p/q/z": {old, nil}, "other/w": {old, nil},
	}}
	return src, b, rules
}

func opts(t *testing.T) Options {
	// p/q/ is an earlier run's quarantine prefix (before prune refused one inside the key space).
	return Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: "p/", Quarantine: "q/", Exclude: []string{"p/q/"},
		MaxDelete: Threshold{Count: 10}, Listers: 2, Workers: 3, Floor: 150 + MinStaleMargin.Microseconds()} // stale floor 150
}

func lines(t *testing.T, dir, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(strings.TrimSpace(string(b)))
}

// candidates are FileCandidates' keys, sorted: they are written in the order their HEADs answered.
func candidates(t *testing.T, dir string) []string {
	t.Helper()
	out := lines(t, dir, FileCandidates)
	slices.Sort(out)
	return out
}

// TestRunFinds: candidates are the objects only in S3, not those written during the scan nor
// those under the quarantine prefix; missing and stale keys are listed; a dry run deletes nothing.
func TestRunFinds(t *testing.T) {
	src, b, rules := fixture(t)
	o := opts(t)
	rec := &fakeRecorder{}
	res, err := Run(context.Background(), src, b, rules, rec, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := candidates(t, o.Out); !slices.Equal(got, []string{"p/x"}) {
		t.Errorf("candidates %q, want [p/x]", got)
	}
	if got := lines(t, o.Out, FileRecent); !slices.Equal(got, []string{"p/y"}) {
		t.Errorf("recent %q, want [p/y]", got)
	}
	if got := lines(t, o.Out, FileMissing); !slices.Equal(got, []string{"c"}) {
		t.Errorf("missing %q, want [c]", got)
	}
	// b: 150 < 200; e: no writetime metadata but 50 is under the floor (not checked); a: the
	// first target's 100, not the second's 999.
	if got := lines(t, o.Out, FileStale); !slices.Equal(got, []string{"b", "p/b", "200", "150"}) {
		t.Errorf("stale %q, want b p/b 200 150", got)
	}
	want := Result{SourceKeys: 4, Null: 1, Invalid: 1, Objects: 5, Unlisted: 1, Missing: 2, OnlyInS3: 1, Recent: 1, Checked: 1, Stale: 1, Limit: 10}
	res.ScanStart, res.ScanEnd, res.Examples = time.Time{}, time.Time{}, nil
	if !reflect.DeepEqual(*res, want) {
		t.Errorf("result %+v\nwant   %+v", *res, want)
	}
	if len(b.deleted) != 0 || len(rec.recs) != 0 {
		t.Errorf("dry run deleted %q, recorded %v", b.deleted, rec.recs)
	}
}

// TestRunDeletes: --delete deletes the candidates only, each recorded first; an object rewritten
// since the listing is kept; --quarantine moves instead.
func TestRunDeletes(t *testing.T) {
	for _, quarantine := range []bool{false, true} {
		src, b, rules := fixture(t)
		for _, k := range []string{"x2", "x3"} { // ferry's objects of deleted keys x2 and x3
			b.objs["p/"+k] = fakeObj{b.objs["p/x"].mod, map[string]string{blobstore.OwnerMeta: k}}
		}
		heads := 0
		b.afterList = func(key string) time.Time { // p/x3 rewritten after the merge's HEAD of it
			if key == "p/x3" {
				if heads++; heads > 1 {
					return time.Now()
				}
			}
			return b.objs[key].mod
		}
		o := opts(t)
		o.Delete = true
		if !quarantine {
			o.Quarantine = ""
			delete(b.objs, "p/q/z") // would be a candidate without the quarantine prefix
		}
		rec := &fakeRecorder{}
		res, err := Run(context.Background(), src, b, rules, rec, o)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(b.deleted)
		if !slices.Equal(b.deleted, []string{"p/x", "p/x2"}) || res.Changed != 1 {
			t.Errorf("quarantine %v: deleted %q, changed %d; want p/x, p/x2 and 1", quarantine, b.deleted, res.Changed)
		}
		if len(rec.recs) != 2 {
			t.Fatalf("records %+v, want 2", rec.recs)
		}
		for _, r := range rec.recs {
			want := "deleted"
			if quarantine {
				want = "quarantined:q/" + r.Object
				if b.copied[r.Object] != "q/"+r.Object {
					t.Errorf("%s copied to %q", r.Object, b.copied[r.Object])
				}
			}
			if r.Action != want || "p/"+r.Key != r.Object || r.Run == "" {
				t.Errorf("record %+v, want action %s, key %s", r, want, strings.TrimPrefix(r.Object, "p/"))
			}
		}
		if quarantine && (res.Quarantined != 2 || res.Deleted != 0) || !quarantine && res.Deleted != 2 {
			t.Errorf("quarantine %v: deleted %d, quarantined %d", quarantine, res.Deleted, res.Quarantined)
		}
	}
}

// TestRunRefuses: an incomplete scan or listing, a recorder that cannot record, and more
// candidates than --max-delete delete nothing.
func TestRunRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*fakeSource, *fakeBucket, *fakeRecorder, *Options)
		want    string
		wantRes bool
	}{
		{"scan failed mid-way", func(s *fakeSource, _ *fakeBucket, _ *fakeRecorder, _ *Options) {
			s.err = errors.New("range (1, 2]: no host available")
		}, "source scan did not finish", false},
		{"listing failed", func(_ *fakeSource, b *fakeBucket, _ *fakeRecorder, _ *Options) {
			b.listErr = errors.New("503")
		}, "listing did not finish", false},
		{"over --max-delete", func(_ *fakeSource, _ *fakeBucket, _ *fakeRecorder, o *Options) {
			o.MaxDelete = Threshold{Percent: 0.1, IsPercent: true}
		}, "exceed --max-delete", true},
		{"no record, no delete", func(_ *fakeSource, _ *fakeBucket, r *fakeRecorder, _ *Options) {
			r.err = errors.New("nats down")
		}, "not pruned", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, b, rules := fixture(t)
			o := opts(t)
			o.Delete = true
			rec := &fakeRecorder{}
			tc.mutate(&src, b, rec, &o)
			res, err := Run(context.Background(), src, b, rules, rec, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one with %q", err, tc.want)
			}
			if (res != nil) != tc.wantRes {
				t.Errorf("result %v, want one: %v", res, tc.wantRes)
			}
			if len(b.deleted) != 0 {
				t.Errorf("deleted %q", b.deleted)
			}
		})
	}
}

func TestProofProven(t *testing.T) {
	ok := Proof{Complete: true, Consistency: "LOCAL_QUORUM", Required: "LOCAL_QUORUM", OnlyInS3: 3, Deleted: 3}
	gone := Proof{Complete: true, Consistency: "ALL", Required: "LOCAL_QUORUM", OnlyInS3: 3, Deleted: 1, Quarantined: 1, Gone: 1}
	for _, p := range []Proof{ok, gone} {
		if !p.Proven() || p.Why() != "" {
			t.Errorf("%+v: not proven: %s", p, p.Why())
		}
	}
	for _, p := range []Proof{
		{Complete: false},
		{Complete: true, Missing: 1},
		{Complete: true, OnlyInS3: 2, Deleted: 1},
		{Complete: true, Stale: 1},
		{Complete: true, Recent: 1},
		{Complete: true, Unchecked: 1},
		{Complete: true, Consistency: "LOCAL_ONE", Required: "LOCAL_QUORUM"},
	} {
		if p.Proven() || p.Why() == "" {
			t.Errorf("%+v proven", p)
		}
	}
}
