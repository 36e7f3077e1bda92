// Package prune is `ferry prune`: it deletes (or moves under a quarantine prefix) the objects of
// the job's bucket whose source key no longer exists, and proves the cut-over. It reads the whole
// source key set itself, by token ranges at the job's prune consistency, lists the bucket, sorts
// both in bounded memory and merges them by S3 key. Objects only in S3 are the candidates; source
// keys without an object, and objects older than their source row's writetime, fail the proof.
// A scan or a listing that did not finish deletes nothing.
package prune

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/tools/diff"
)

// Files written into --out.
const (
	FileCandidates = "only-in-s3.txt"      // objects only in S3, older than the scan: the candidates
	FileMissing    = "missing-in-s3.txt"   // source keys without an object (ready for producer --keys)
	FileStale      = "stale.txt"           // source key TAB S3 key TAB source writetime TAB object writetime or -
	FileRecent     = "newer-than-scan.txt" // objects written after the scan began, only in S3 or newer than their row: not judged
	FileInvalid    = "invalid-keys.txt"    // source keys the key rules refuse: key TAB reason
)

// WriteTimeMeta is the object metadata holding the source row's writetime in decimal
// microseconds, which the uploader stores.
const WriteTimeMeta = blobstore.WriteTimeMeta

// Examples bounds the keys of each failing class the proof keeps in the KV; the files hold all.
const Examples = 100

// Row is one source row a Source read.
type Row struct {
	Key       []byte // reused after the callback returns
	WriteTime int64  // microseconds
	Null      bool   // the blob is NULL: no blob, as the fetcher sees it
	Target    int    // index of the read target (fetch order) whose table held it
}

// Source enumerates the source key set, completely or not at all: an error means the key set is
// incomplete.
type Source interface {
	Scan(ctx context.Context, fn func(Row) error) error
	// Holds reads key on every read target of the job (a point read, as the fetcher reads):
	// true when any holds a blob for it. An error means it could not tell.
	Holds(ctx context.Context, key string) (bool, error)
}

// Bucket is the destination bucket (*blobstore.Client through bucketOf).
type Bucket interface {
	// Ranges split the listing of prefix among listers: (after, upTo] ranges covering every key.
	Ranges(ctx context.Context, prefix string) ([][2]string, error)
	ListObjects(ctx context.Context, prefix, after, upTo string, fn func(blobstore.Object) error) error
	Inspect(ctx context.Context, key string) (blobstore.Info, error)
	// Copy copies src, only while its ETag is etag, to dst; it never replaces an object at dst.
	Copy(ctx context.Context, src, dst, etag string) error
	// Delete deletes key only while its ETag is etag (blobstore.ErrChanged otherwise), where the
	// server honours If-Match.
	Delete(ctx context.Context, key, etag string) error
	// Clock is the bucket's own time, which its LastModified times are in.
	Clock(ctx context.Context) (time.Time, error)
}

// Recorder keeps the record of each deletion (the PRUNED stream).
type Recorder interface {
	Record(ctx context.Context, r Record) error
}

// Record is one pruned object, as the PRUNED stream holds it (JSON).
type Record struct {
	Object string    `json:"object"`        // the S3 key
	Key    string    `json:"key,omitempty"` // the source key the object's owner record names
	Action string    `json:"action"`        // deleted, quarantined:<dest>, or failed:<action>: <error>
	Time   time.Time `json:"time"`
	Run    string    `json:"run"` // the prune run (its scan start)
}

// Options are one prune run's settings.
type Options struct {
	Out        string
	Tmp        string
	Mem        int64
	Prefix     string   // the listing prefix: the key rules' literal prefix
	Quarantine string   // move under this prefix instead of deleting; objects under it are never candidates
	Exclude    []string // earlier runs' quarantine prefixes and the manifests': objects under them are never candidates either
	Delete     bool     // act; false: a dry run
	MaxDelete  Threshold
	Listers    int
	Workers    int           // concurrent HEADs, copies and deletes
	ClockSkew  time.Duration // objects modified after the scan start less this are never candidates
	Floor      int64         // pass 1's start (µs); 0: every key is checked for staleness
	Margin     time.Duration // the largest --since-margin of the passes: the stale floor is Floor less it (at least MinStaleMargin)
	Bucket     string        // for messages
	Log        func(msg string, args ...any)
}

// Result is what a run found and did.
type Result struct {
	ScanStart, ScanEnd time.Time
	SourceKeys         int64 // distinct source keys with a blob
	Null               int64 // rows whose blob is NULL (not source blobs)
	Invalid            int64 // source keys the rules refuse (in Missing too)
	Objects            int64 // objects listed (outside the quarantine prefix)
	Unlisted           int64 // objects skipped: a key holding a newline or NUL, or under a quarantine or the manifests' prefix
	Missing            int64 // source keys without an object
	Shared             int64 // of Missing: keys whose S3 key holds the object another source key owns
	OnlyInS3           int64 // candidates
	Recent             int64 // objects only in S3 written after the scan began
	Foreign            int64 // objects only in S3 that are not ferry's (FileForeign): never candidates
	Checked            int64 // objects HEADed for staleness
	Stale              int64
	Unchecked          int64 // HEADs that failed
	Limit              int64 // --max-delete as a count
	Deleted            int64
	Quarantined        int64
	Gone               int64 // candidates already gone when acted on
	Changed            int64 // candidates rewritten since the listing: kept
	Live               int64 // candidates whose owner key a read target held at the re-check: kept
	Failed             int64

	Examples map[string][]string // up to Examples keys by class: missing, only_in_s3, stale, recent
}

// ErrRefused: the run deleted nothing because the candidates exceed --max-delete.
var ErrRefused = errors.New("refused")

// sep splits a record's fields: NUL sorts before every byte an S3 key can hold, so records sort
// by their S3 key first, and no key holds it (S3 keys are XML text; the rules refuse control
// characters).
const sep = 0

// Run scans, lists, merges, writes the files and, with o.Delete, deletes or moves the candidates.
// It refuses (no deletion, an error) when the scan or the listing did not finish, and when the
// candidates exceed o.MaxDelete.
func Run(ctx context.Context, src Source, b Bucket, rules *keyrules.Rules, rec Recorder, o Options) (*Result, error) {
	res := &Result{Examples: map[string][]string{}}
	srt, err := diff.NewSorter(o.Tmp, diff.Budget(o.Mem), 96)
	if err != nil {
		return nil, err
	}
	defer srt.Close()
	if err := CheckQuarantine(o.Prefix, o.Quarantine); err != nil {
		return nil, err
	}
	// The guard is in S3's clock, which LastModified is in: this host's may differ by minutes.
	s3Start, err := b.Clock(ctx)
	if err != nil {
		return nil, fmt.Errorf("nothing deleted: %w", err)
	}
	res.ScanStart = time.Now()
	guard := s3Start.Truncate(time.Second).Add(-o.ClockSkew) // S3 keeps whole seconds

	invalid, err := diff.CreateOutput(o.Out, FileInvalid)
	if err != nil {
		return nil, err
	}
	defer invalid.Abort()
	var scanErr error
	srcRuns, err := srt.Sort(ctx, func(add func([]byte) error) error {
		var buf []byte
		scanErr = src.Scan(ctx, func(r Row) error {
			if r.Null {
				res.Null++
				return nil
			}
			s3key, err := rules.Map(string(r.Key))
			if err != nil {
				invalid.Line(fmt.Sprintf("%s\t%s", r.Key, oneLine(err.Error())))
				res.Invalid++
				return nil
			}
			// s3key NUL key NUL target NUL writetime: the first record of a key is its first
			// target's, the one the fetcher reads.
			buf = append(append(append(buf[:0], s3key...), sep), r.Key...)
			buf = fmt.Appendf(append(buf, sep), "%02x", r.Target)
			buf = strconv.AppendInt(append(buf, sep), r.WriteTime, 10)
			return add(buf)
		})
		return scanErr
	}, false)
	if err != nil {
		if scanErr != nil {
			return nil, fmt.Errorf("the source scan did not finish, so its key set is incomplete; nothing deleted: %w", scanErr)
		}
		return nil, err
	}
	var listErr error
	listed, err := srt.Sort(ctx, func(add func([]byte) error) error {
		listErr = list(ctx, b, o, res, add)
		return listErr
	}, true)
	if err != nil {
		if listErr != nil {
			return nil, fmt.Errorf("the bucket listing did not finish; nothing deleted: %w", listErr)
		}
		return nil, err
	}
	res.ScanEnd = time.Now()
	ms, ml, err := srt.Merge(srcRuns, listed)
	if err != nil {
		return nil, err
	}
	defer srt.Close(ms, ml)
	if err := merge(ctx, ms, ml, b, rules, o, guard, res); err != nil {
		return nil, err
	}
	if err := invalid.Commit(); err != nil {
		return nil, err
	}
	res.Limit = o.MaxDelete.Of(res.Objects)
	if !o.Delete {
		return res, nil
	}
	if res.OnlyInS3 > res.Limit {
		return res, fmt.Errorf("%w: %d objects to delete exceed --max-delete %s (%d of %d objects listed); nothing deleted: check %s, then raise --max-delete",
			ErrRefused, res.OnlyInS3, o.MaxDelete, res.Limit, res.Objects, filepath.Join(o.Out, FileCandidates))
	}
	return res, act(ctx, src, b, rules, rec, o, guard, res)
}

// list lists the bucket under o.Prefix with o.Listers listers and adds "key NUL unix-nanos".
func list(ctx context.Context, b Bucket, o Options, res *Result, add func([]byte) error) error {
	ranges, err := b.Ranges(ctx, o.Prefix)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	var buf []byte
	work := make(chan [2]string)
	var wg sync.WaitGroup
	for range min(max(o.Listers, 1), len(ranges)) {
		wg.Go(func() {
			for r := range work {
				err := b.ListObjects(ctx, o.Prefix, r[0], r[1], func(obj blobstore.Object) error {
					mu.Lock()
					defer mu.Unlock()
					if strings.ContainsAny(obj.Key, "\n\x00") || o.excluded(obj.Key) {
						res.Unlisted++
						return nil
					}
					res.Objects++
					buf = append(append(buf[:0], obj.Key...), sep)
					buf = strconv.AppendInt(buf, obj.LastModified.UnixNano(), 10)
					return add(buf)
				})
				if err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, r := range ranges {
		select {
		case work <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}

// srcRec is one source record.
type srcRec struct {
	s3key, key []byte
	wt         int64
}

func parseSrc(rec []byte) (srcRec, error) {
	f := bytes.Split(rec, []byte{sep})
	if len(f) != 4 {
		return srcRec{}, fmt.Errorf("source record %q: want 4 fields", rec)
	}
	wt, err := strconv.ParseInt(string(f[3]), 10, 64)
	if err != nil {
		return srcRec{}, fmt.Errorf("source record %q: %w", rec, err)
	}
	return srcRec{s3key: f[0], key: f[1], wt: wt}, nil
}

// group is the source keys of one S3 key, each with its first target's writetime.
type group struct {
	s3key string
	keys  []string
	wts   []int64
}

// merge walks both sorted inputs by S3 key: candidates, missing keys, and stale checks.
func merge(ctx context.Context, ms, ml *diff.Merger, b Bucket, rules *keyrules.Rules, o Options, guard time.Time, res *Result) error {
	outs := map[string]*diff.Output{}
	for _, f := range []string{FileCandidates, FileMissing, FileStale, FileRecent, FileForeign} {
		out, err := diff.CreateOutput(o.Out, f)
		if err != nil {
			return err
		}
		defer out.Abort()
		outs[f] = out
	}
	var mu sync.Mutex // the outputs and res, shared with the HEAD workers
	example := func(class, key string) {
		if len(res.Examples[class]) < Examples {
			res.Examples[class] = append(res.Examples[class], key)
		}
	}
	orph := startOrphans(ctx, b, rules, o, guard, res, &mu, outs[FileCandidates], outs[FileForeign], outs[FileRecent], example)
	checks := make(chan group, 1024)
	var wg sync.WaitGroup
	for range max(o.Workers, 1) {
		wg.Go(func() {
			for g := range checks {
				v, err := checkStale(ctx, b, g, guard)
				mu.Lock()
				res.Checked++
				switch {
				case err != nil:
					res.Unchecked++
					if res.Unchecked <= 10 { // the count says the rest; an S3 outage must not flood the log
						o.log("prune: HEAD for the proof failed", "object", g.s3key, "err", err)
					}
				case v.stale:
					res.Stale++
					outs[FileStale].Line(v.line)
					example("stale", v.key)
				case v.recent:
					res.Recent++
					outs[FileRecent].Line(g.s3key)
					example("recent", g.s3key)
				}
				for _, k := range v.missing {
					res.Missing++
					res.Shared++
					outs[FileMissing].Line(k)
					example("missing", k)
				}
				mu.Unlock()
			}
		})
	}
	err := walk(ctx, ms, ml, func(g *group, obj []byte) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case g == nil: // only in S3
			key, nanos, _ := bytes.Cut(obj, []byte{sep})
			n, err := strconv.ParseInt(string(nanos), 10, 64)
			if err != nil {
				return fmt.Errorf("listing record %q: %w", obj, err)
			}
			if !time.Unix(0, n).Before(guard) {
				res.Recent++
				outs[FileRecent].Line(string(key))
				example("recent", string(key))
				return nil
			}
			// Only an object whose owner record names a key the rules put here is a candidate.
			mu.Unlock()
			orph.send(ctx, string(key))
			mu.Lock()
		case obj == nil: // no object
			for _, k := range g.keys {
				res.Missing++
				outs[FileMissing].Line(k)
				example("missing", k)
			}
		default:
			// Several keys on one object: only the owner's bytes are there, which takes a HEAD.
			floor := o.staleFloor()
			check := floor <= 0 || len(g.keys) > 1
			for _, wt := range g.wts {
				check = check || wt >= floor
			}
			if check {
				mu.Unlock()
				select {
				case checks <- *g:
				case <-ctx.Done():
				}
				mu.Lock()
			}
		}
		return nil
	}, res)
	close(checks)
	wg.Wait()
	orph.finish()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Invalid keys have no object either: they count as missing, listed in invalid-keys.txt.
	res.Missing += res.Invalid
	for _, f := range []string{FileCandidates, FileMissing, FileStale, FileRecent, FileForeign} {
		if err := outs[f].Commit(); err != nil {
			return err
		}
	}
	return nil
}

// walk merges the source records (grouped by S3 key) with the listing and calls fn with a group
// and its object's record, a group without object (obj nil), or an object without group (g nil).
func walk(ctx context.Context, ms, ml *diff.Merger, fn func(g *group, obj []byte) error, res *Result) error {
	okS, okL := ms.Next(), ml.Next()
	// nextGroup reads the records of the next S3 key; records of one key sort by target, so the
	// first of a key is its first target's, the one the fetcher reads.
	nextGroup := func() (*group, error) {
		var g *group
		for okS {
			r, err := parseSrc(ms.Record())
			if err != nil {
				return nil, err
			}
			if g == nil {
				g = &group{s3key: string(r.s3key)}
			} else if string(r.s3key) != g.s3key {
				break
			}
			if k := string(r.key); len(g.keys) == 0 || g.keys[len(g.keys)-1] != k {
				g.keys = append(g.keys, k)
				g.wts = append(g.wts, r.wt)
				res.SourceKeys++
			}
			okS = ms.Next()
		}
		return g, nil
	}
	cur, err := nextGroup()
	if err != nil {
		return err
	}
	for n := 0; okL || cur != nil; n++ {
		if n&0xffff == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		var objKey []byte
		if okL {
			objKey, _, _ = bytes.Cut(ml.Record(), []byte{sep})
		}
		var c int
		switch {
		case cur == nil:
			c = 1
		case !okL:
			c = -1
		default:
			c = strings.Compare(cur.s3key, string(objKey))
		}
		switch {
		case c > 0:
			err = fn(nil, ml.Record())
			okL = ml.Next()
		case c < 0:
			if err = fn(cur, nil); err == nil {
				cur, err = nextGroup()
			}
		default:
			if err = fn(cur, ml.Record()); err == nil {
				okL = ml.Next()
				cur, err = nextGroup()
			}
		}
		if err != nil {
			return err
		}
	}
	return errors.Join(ms.Err(), ml.Err())
}

// verdict is what the stale check found for a group.
type verdict struct {
	stale   bool
	line    string   // for FileStale
	key     string   // the key judged
	recent  bool     // the object was written after the scan began with a newer writetime: not judged
	missing []string // the group's other keys: their bytes are not in the object
}

// checkStale HEADs g's object and judges it against the key its owner record names (the first
// key when no key of the group owns it); the group's other keys count as missing: the object holds
// one key's bytes, and the uploader refuses another key's different bytes (identical bytes cannot
// be told from the key scan, so they count as missing too). The object's writetime must equal the
// writetime of that key's row in the first table holding it (the one the fetcher reads): older or
// absent is stale; newer, on an object written before the scan began, is stale too (bytes the
// source no longer holds: a row deleted from the first table, left in a fallback with an older
// writetime); newer on an object written since is a write during the scan, not judged.
func checkStale(ctx context.Context, b Bucket, g group, guard time.Time) (verdict, error) {
	info, err := b.Inspect(ctx, g.s3key)
	if errors.Is(err, blobstore.ErrNotFound) { // gone since the listing
		return verdict{stale: true, key: g.keys[0], line: fmt.Sprintf("%s\t%s\t%d\t-", g.keys[0], g.s3key, g.wts[0])}, nil
	}
	if err != nil {
		return verdict{}, err
	}
	owner := 0
	if len(g.keys) > 1 {
		owner = -1
		for _, want := range []blobstore.Ownership{blobstore.OwnerKey, blobstore.OwnerAmbiguous} {
			for i, k := range g.keys {
				if o, _ := blobstore.OwnerOf(info.Metadata, k); o == want && owner < 0 {
					owner = i
				}
			}
		}
		owner = max(owner, 0)
	}
	v := verdict{key: g.keys[owner]}
	for i, k := range g.keys {
		if i != owner {
			v.missing = append(v.missing, k)
		}
	}
	want := g.wts[owner]
	m := info.Meta(WriteTimeMeta)
	got, perr := strconv.ParseInt(strings.TrimSpace(m), 10, 64)
	switch {
	case m == "" || perr != nil:
		v.stale, v.line = true, fmt.Sprintf("%s\t%s\t%d\t-", v.key, g.s3key, want)
	case got < want:
		v.stale, v.line = true, fmt.Sprintf("%s\t%s\t%d\t%d", v.key, g.s3key, want, got)
	case got > want && want > 0 && info.LastModified.Before(guard):
		v.stale, v.line = true, fmt.Sprintf("%s\t%s\t%d\t%d", v.key, g.s3key, want, got)
	case got > want:
		v.recent = true
	}
	return v, nil
}

// act deletes or moves the candidates listed in the candidates file. Right before acting on
// one it HEADs it (gone: skipped; modified since the guard, or no longer ferry's: kept) and
// reads its owner key on every read target (held by any: kept, live at re-check); the DELETE is
// conditional on the ETag that HEAD saw, so an upload landing after the re-check survives. The
// record (the action it is about to take) is stored before the action, so a deletion is never
// unrecorded; a crash in between leaves a record of an object that is still there, which the
// next prune lists again.
func act(ctx context.Context, src Source, b Bucket, rules *keyrules.Rules, rec Recorder, o Options, guard time.Time, res *Result) error {
	f, err := os.Open(filepath.Join(o.Out, FileCandidates))
	if err != nil {
		return err
	}
	defer f.Close()
	run := res.ScanStart.UTC().Format(time.RFC3339Nano)
	var mu sync.Mutex
	var errs []error
	work := make(chan string, 256)
	var wg sync.WaitGroup
	for range max(o.Workers, 1) {
		wg.Go(func() {
			for key := range work {
				outcome, err := pruneOne(ctx, src, b, rules, rec, o, guard, run, key)
				mu.Lock()
				switch {
				case err != nil:
					res.Failed++
					if len(errs) < 10 {
						errs = append(errs, err)
					}
				case outcome == "gone":
					res.Gone++
				case outcome == "changed":
					res.Changed++
				case outcome == "live":
					res.Live++
				case o.Quarantine != "":
					res.Quarantined++
				default:
					res.Deleted++
				}
				mu.Unlock()
			}
		})
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && ctx.Err() == nil {
		work <- sc.Text()
	}
	close(work)
	wg.Wait()
	if err := errors.Join(sc.Err(), ctx.Err()); err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d objects could not be pruned (kept; those acted on have a failed record in PRUNED): %w", res.Failed, errors.Join(errs...))
	}
	return nil
}

// pruneOne acts on one candidate: "gone", "changed", "live", or "" when done.
func pruneOne(ctx context.Context, src Source, b Bucket, rules *keyrules.Rules, rec Recorder, o Options, guard time.Time, run, key string) (string, error) {
	info, err := b.Inspect(ctx, key)
	switch {
	case errors.Is(err, blobstore.ErrNotFound):
		return "gone", nil
	case err != nil:
		return "", err
	case !info.LastModified.Before(guard):
		return "changed", nil
	}
	owner, _ := ownerOf(rules, info, key)
	if owner == "" { // replaced since the merge by an object that is not ferry's
		return "changed", nil
	}
	// The scan's verdict is minutes old and may have read a subset of the targets: ask every
	// target again now, as the fetcher would.
	live, err := src.Holds(ctx, owner)
	if err != nil {
		return "", fmt.Errorf("re-check %s's source key %q on every read target (kept): %w", key, owner, err)
	}
	if live {
		return "live", nil
	}
	action := "deleted"
	if o.Quarantine != "" {
		action = "quarantined:" + o.Quarantine + key
	}
	r := Record{Object: key, Key: owner, Action: action, Time: time.Now().UTC(), Run: run}
	if err := rec.Record(ctx, r); err != nil {
		return "", fmt.Errorf("record the pruning of %s (not pruned): %w", key, err)
	}
	if o.Quarantine != "" {
		err = b.Copy(ctx, key, o.Quarantine+key, info.ETag)
	}
	if err == nil {
		err = b.Delete(ctx, key, info.ETag)
	}
	if err != nil {
		r.Action, r.Time = "failed:"+action+": "+oneLine(err.Error()), time.Now().UTC()
		if rerr := rec.Record(ctx, r); rerr != nil {
			return "", fmt.Errorf("prune %s: %w", key, errors.Join(err, rerr))
		}
		if errors.Is(err, blobstore.ErrChanged) { // rewritten after the re-check: the new upload stays
			return "changed", nil
		}
		return "", fmt.Errorf("prune %s: %w", key, err)
	}
	return "", nil
}

// excluded says whether key is under a quarantine prefix, this run's or an earlier one's.
func (o Options) excluded(key string) bool {
	if o.Quarantine != "" && strings.HasPrefix(key, o.Quarantine) {
		return true
	}
	for _, p := range o.Exclude {
		if p != "" && strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// staleFloor is the writetime (µs) from which source keys are checked for staleness; 0: all.
func (o Options) staleFloor() int64 {
	if o.Floor <= 0 {
		return 0
	}
	return max(o.Floor-max(o.Margin, MinStaleMargin).Microseconds(), 1)
}

func (o Options) log(msg string, args ...any) {
	if o.Log != nil {
		o.Log(msg, args...)
	}
}

// oneLine keeps a reason on one line of a tab-separated file.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}
