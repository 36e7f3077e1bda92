// Package report is `ferry report`: the end-of-migration account for the people who own it,
// read from NATS (and from the manifest segments only to resolve failures whose DONE entry was
// drained). report.md and report.json say how many keys were published, verified,
// dead-lettered (by stage and reason) and are still in the pipeline, how fast they were verified
// over time, and exactly which keys did not arrive and why; dlq-keys.txt and dlq.jsonl list them.
package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/tools/prune"
	"github.com/ferry-migrate/ferry/tools/status"
)

// Files written into the output folder.
const (
	FileMarkdown = "report.md"
	FileJSON     = "report.json"
	FileKeys     = "dlq-keys.txt" // one dead-lettered key a line (keys holding a line break: dlq.jsonl only)
	FileEntries  = "dlq.jsonl"    // one dead letter a line: key, stage, reason, error, attempts, origin
)

// KeysPerReason bounds the keys report.md lists for one stage/reason; the files hold all.
const KeysPerReason = 100

// Report is what `ferry report` found. JSON field names are stable.
type Report struct {
	Job  string    `json:"job"`
	Time time.Time `json:"time"`
	// Published is KEYS' last sequence: every key message stored in KEYS, replays included.
	// Keys the producer dead-lettered (producer/invalid_key) never reach KEYS.
	Published    uint64            `json:"published"`
	Verified     uint64            `json:"verified"` // entries DONE ever stored (drained ones included)
	DeadLettered uint64            `json:"dead_lettered"`
	DeadLetters  map[string]uint64 `json:"dead_letters"` // by "stage/reason"
	InPipeline   uint64            `json:"in_pipeline"`  // messages in the work queues
	Queued       map[string]uint64 `json:"in_pipeline_by_stage"`
	// InFlight are the keys between KEYS and DONE: the messages in KEYS, BLOBS and UPLOADED.
	InFlight uint64 `json:"in_flight"`
	// Unaccounted is Published − (Verified + dead letters after KEYS + InFlight): 0 when every
	// published key is in exactly one of them. Above 0, keys are in none (see Discrepancy);
	// below, DONE or DLQ holds entries that no published key accounts for.
	Unaccounted int64 `json:"unaccounted"`

	JobCreated     time.Time  `json:"job_created"` // KEYS stream created
	FirstVerified  *time.Time `json:"first_verified"`
	LastVerified   *time.Time `json:"last_verified"`
	ElapsedSeconds float64    `json:"elapsed_seconds"` // first to last verified
	// PerMinute: minutes more than a day before the last drained entry are summed into their
	// hour's first minute (the drain keeps hours for those).
	PerMinute []Bucket `json:"verified_per_minute"`
	// Scans are the producer's token-range scans with their passes (full and delta), as
	// `ferry status` reads them from the job's KV.
	Scans    []status.Scan   `json:"scans"`
	Manifest ManifestSummary `json:"manifest"`

	// Dead letters as read (not in JSON: the files hold them all).
	Samples    map[string][]Entry `json:"-"`                     // up to KeysPerReason per stage/reason
	LineBreaks int                `json:"keys_with_line_breaks"` // keys only in dlq.jsonl
	Files      []string           `json:"files"`

	// DeletedAtSource are the dead letters of reason deleted (in DeadLettered too): keys deleted
	// or expired at the source after a scan read them; not failures.
	DeletedAtSource uint64 `json:"deleted_at_source"`
	// The cut-over proof: the last `ferry prune` run's (nil before the first), PROVEN only when
	// its complete scan at the required consistency found nothing missing, only in S3 or stale.
	Proof       *prune.Proof `json:"proof"`
	ProofStatus string       `json:"proof_status"` // PROVEN, NOT PROVEN, NONE
	ProofWhy    string       `json:"proof_why,omitempty"`
	// Pruned are the records of FERRY_<job>_PRUNED: objects prune deleted or moved.
	Pruned         uint64            `json:"pruned"`
	PrunedByAction map[string]uint64 `json:"pruned_by_action"` // deleted, quarantined, failed
	PrunedError    string            `json:"pruned_error,omitempty"`
	// Unresolved are the keys dead-lettered as failures (any reason but deleted) with no DONE
	// entry stored after their last dead letter: S3 may not hold their source bytes whatever
	// prune found, so the cut-over is not PROVEN while there are any.
	Unresolved         uint64   `json:"unresolved_failures"`
	UnresolvedExamples []string `json:"unresolved_examples,omitempty"` // up to KeysPerReason

	failures map[string]time.Time // failure dead letters' keys: the last one's time, until a later DONE
}

// ManifestSummary is what `ferry manifest` has drained from DONE.
type ManifestSummary struct {
	Entries  uint64 `json:"entries"`       // in segments
	Segments uint64 `json:"segments"`      // recorded
	Lost     uint64 `json:"lost"`          // gone from DONE before the drain read them
	InDone   uint64 `json:"in_done"`       // entries DONE still holds
	Read     int    `json:"segments_read"` // to resolve failures: segments of an older ferry's drain
	// ResolutionsRead are the resolution objects read (manifest.ResolvedKey): one per segment
	// that drained an entry of a key with a failure dead letter.
	ResolutionsRead int    `json:"resolutions_read"`
	Unread          string `json:"segments_unread,omitempty"` // why segments that were needed were not read
}

// Bucket is the number of keys verified in one minute (its start, UTC).
type Bucket struct {
	Minute   time.Time `json:"minute"`
	Verified uint64    `json:"verified"`
}

// Entry is one dead letter, as dlq.jsonl holds it.
type Entry struct {
	Key      string `json:"key"`
	Stage    string `json:"stage"`
	Reason   string `json:"reason"`
	Error    string `json:"error"`
	Attempts string `json:"attempts"`
	Origin   string `json:"origin,omitempty"`
	Seq      uint64 `json:"dlq_seq"`
}

// Options are what a report may read besides NATS.
type Options struct {
	// Manifests is where the job's manifest segments are (manifest.bucket), Prefix its
	// manifest.prefix: read only when a failure dead letter may have been resolved by a DONE
	// entry the drain has moved there. ManifestsErr says why Manifests is nil.
	Manifests    manifest.Store
	Prefix       string
	ManifestsErr error
}

// Write collects the report of job n from NATS alone and writes its files into dir.
func Write(ctx context.Context, js jetstream.JetStream, n bus.Names, dir string, now time.Time) (*Report, error) {
	return WriteWith(ctx, js, n, dir, now, Options{})
}

// WriteWith collects the report of job n and writes its files into dir (created if missing).
func WriteWith(ctx context.Context, js jetstream.JetStream, n bus.Names, dir string, now time.Time, o Options) (*Report, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	r := &Report{Job: n.Job, Time: now.UTC(), Queued: map[string]uint64{}, Samples: map[string][]Entry{}, failures: map[string]time.Time{},
		Files: []string{FileMarkdown, FileHTML, FileJSON, FileKeys, FileEntries, FilePruned}}
	keys, err := service.WorkQueue(ctx, js, n, n.Keys)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	r.Published, r.JobCreated = keys.LastSeq, keys.Created.UTC()
	for _, q := range []struct{ stage, base string }{{bus.StageFetcher, n.Keys}, {bus.StageUploader, n.Blobs}, {bus.StageVerifier, n.Uploaded}} {
		w, err := service.WorkQueue(ctx, js, n, q.base)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		r.Queued[q.stage] = w.Msgs
		r.InPipeline += w.Msgs
		r.InFlight += w.Msgs
	}
	adv, err := service.JobStream(ctx, js, n, n.Advisories)
	if err != nil {
		return nil, err
	}
	ai, err := adv.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("report: stream info %s: %w", n.Advisories, err)
	}
	// Not in flight: an advisory is about a message still in its work queue.
	r.Queued[bus.StageAdvisor] = ai.State.Msgs
	r.InPipeline += ai.State.Msgs
	counts, err := deadletter.Count(ctx, js, n)
	if err != nil {
		return nil, err
	}
	r.DeadLetters, r.DeadLettered = counts, counts.Total()
	r.deletedAtSource()
	if p, err := status.ReadProducer(ctx, js, n); err == nil {
		r.Scans = p.Scans
	} else {
		return nil, fmt.Errorf("report: %w", err)
	}
	// The DLQ first: DONE, read once, then resolves its failures.
	if err := r.exportDLQ(ctx, js, n, dir); err != nil {
		return nil, err
	}
	if err := r.readDone(ctx, js, n, o); err != nil {
		return nil, err
	}
	r.unresolved()
	r.reconcile()
	if err := r.readProof(ctx, js, n, dir); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, FileJSON), func(w *bufio.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, FileMarkdown), func(w *bufio.Writer) error {
		Markdown(w, r)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, FileHTML), func(w *bufio.Writer) error { return HTML(w, r) }); err != nil {
		return nil, err
	}
	return r, nil
}

// readDone reads the verified counts: the manifest drain's totals and per-minute counts for the
// entries it moved into segments, and DONE's remaining entries (headers only, an ordered
// consumer): memory grows with the minutes, not the keys. Failure dead letters a DONE entry
// stored after them resolves are resolved from DONE, then from the segments written since the
// first of them (o.Manifests).
func (r *Report) readDone(ctx context.Context, js jetstream.JetStream, n bus.Names, o Options) error {
	s, err := service.JobStream(ctx, js, n, n.Done)
	if err != nil {
		return err
	}
	kv, kvErr := js.KeyValue(ctx, n.KV)
	loadState := func() (manifest.State, error) {
		if kvErr != nil {
			return manifest.State{}, nil
		}
		ms, _, err := manifest.LoadState(ctx, kv)
		if err != nil {
			return ms, fmt.Errorf("report: %w", err)
		}
		return ms, nil
	}
	ms, err := loadState()
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("report: stream info %s: %w", n.Done, err)
	}
	var runs []tailRun
	if info.State.Msgs > 0 && info.State.LastSeq >= max(ms.NextSeq, 1) {
		if runs, err = r.readTail(ctx, s, n, ms.NextSeq); err != nil {
			return err
		}
	}
	// A drain running meanwhile moved entries into segments, some before the tail read them: count
	// those from its state as it is now, and the tail only from where that state ends. The state
	// before DONE's info: DONE's last sequence then covers every entry the state recorded.
	if ms, err = loadState(); err != nil {
		return err
	}
	if info, err = s.Info(ctx); err != nil {
		return fmt.Errorf("report: stream info %s: %w", n.Done, err)
	}
	r.Verified = info.State.LastSeq // entries ever stored: in DONE and drained
	r.Manifest = ManifestSummary{Entries: ms.Entries, Segments: ms.Segments, Lost: ms.Lost, InDone: ms.Undrained(info.State)}
	// Drained minutes, and older hours at their first minute (a rollup of an hour or more adds up).
	minutes := map[int64]uint64{}
	for m, c := range ms.Minutes {
		minutes[m] += c
	}
	for h, c := range ms.Hours {
		minutes[h] += c
	}
	first, last := ms.First, ms.Last
	floor := max(ms.NextSeq, 1)
	for _, run := range runs {
		if run.to < floor {
			continue
		}
		minutes[run.first.Truncate(time.Minute).Unix()] += run.to - max(run.from, floor) + 1
		if first.IsZero() || run.first.Before(first) {
			first = run.first
		}
		if run.last.After(last) {
			last = run.last
		}
	}
	if len(r.failures) > 0 && ms.NextSeq > 1 {
		if err := r.resolveFromManifests(ctx, n, o, ms.ResolvedFrom); err != nil {
			return err
		}
	}
	if first.IsZero() {
		return nil
	}
	r.FirstVerified, r.LastVerified = &first, &last
	r.ElapsedSeconds = last.Sub(first).Seconds()
	r.PerMinute = Buckets(minutes, first, last)
	return nil
}

// tailRun is DONE entries of consecutive sequences from..to stored in one minute, first to last:
// the tail as read, kept in runs so that the part a drain moved meanwhile can be dropped.
type tailRun struct {
	from, to    uint64
	first, last time.Time
}

// readTail reads the entries still in DONE from sequence from on (those below are counted in the
// drain's state, should DONE still hold them) and resolves failures with them.
func (r *Report) readTail(ctx context.Context, s jetstream.Stream, n bus.Names, from uint64) ([]tailRun, error) {
	cfg := jetstream.OrderedConsumerConfig{HeadersOnly: true, InactiveThreshold: time.Minute}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	c, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("report: read %s: %w", n.Done, err)
	}
	if ci := c.CachedInfo(); ci == nil || ci.NumPending == 0 {
		return nil, nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, fmt.Errorf("report: read %s: %w", n.Done, err)
	}
	defer it.Stop()
	var runs []tailRun
	var seen uint64
	for {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			// A drain purged what was pending when the read began: nothing more to come.
			if info, ierr := s.Info(ctx); ierr == nil && (info.State.Msgs == 0 || info.State.LastSeq <= seen) {
				return runs, nil
			}
			return nil, fmt.Errorf("report: read %s: %w", n.Done, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("report: read %s: %w", n.Done, err)
		}
		seq, ts := md.Sequence.Stream, md.Timestamp.UTC()
		seen = seq
		if k := len(runs) - 1; k >= 0 && runs[k].to+1 == seq && runs[k].first.Truncate(time.Minute).Equal(ts.Truncate(time.Minute)) {
			runs[k].to = seq
			if ts.After(runs[k].last) {
				runs[k].last = ts
			}
			if ts.Before(runs[k].first) {
				runs[k].first = ts
			}
		} else {
			runs = append(runs, tailRun{from: seq, to: seq, first: ts, last: ts})
		}
		if len(r.failures) > 0 {
			if key, err := bus.Text(m.Headers(), bus.HdrKey); err == nil {
				r.resolve(key, ts)
			}
		}
		if md.NumPending == 0 {
			return runs, nil
		}
	}
}

// resolve drops key's failure when a DONE entry stored at ts, after its last dead letter,
// resolves it (a replay, a later pass).
func (r *Report) resolve(key string, ts time.Time) {
	if t, ok := r.failures[key]; ok && !ts.Before(t) {
		delete(r.failures, key)
	}
}

// SegmentSkew is how far S3's clock may be behind NATS's: a segment last modified this long
// before the first unresolved failure may still hold an entry stored after it.
const SegmentSkew = 10 * time.Minute

// resolveFromManifests resolves failures with the DONE entries the drain moved into segments:
// from the resolutions it wrote beside each segment from DONE sequence resolvedFrom on (the
// entries of keys with a failure dead letter, a few objects however long the migration), then,
// for what is still unresolved, from the segments below resolvedFrom (drained by an older ferry)
// written since the first unresolved failure. Without o.Manifests (no job file) the failures stay
// unresolved: the proof is withheld rather than given on what was not read.
func (r *Report) resolveFromManifests(ctx context.Context, n bus.Names, o Options, resolvedFrom uint64) error {
	if o.Manifests == nil {
		r.Manifest.Unread = "the job file is needed to read the manifest segments (--config): failures whose DONE entry was drained count as unresolved"
		if o.ManifestsErr != nil {
			r.Manifest.Unread += " (" + o.ManifestsErr.Error() + ")"
		}
		return nil
	}
	var keys []string
	if err := o.Manifests.ListObjects(ctx, manifest.ResolvedDir(o.Prefix, n.Job), "", "", func(ob blobstore.Object) error {
		keys = append(keys, ob.Key)
		return nil
	}); err != nil {
		return fmt.Errorf("report: list manifest resolutions: %w", err)
	}
	read := func(k string) error {
		b, err := o.Manifests.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("report: read manifest segment %s: %w", k, err)
		}
		if err := manifest.Decode(bytes.NewReader(b), func(e manifest.Entry) error {
			r.resolve(e.Record.Key, e.Stored)
			return nil
		}); err != nil {
			return fmt.Errorf("report: manifest segment %s: %w", k, err)
		}
		return nil
	}
	for _, k := range keys {
		if len(r.failures) == 0 {
			return nil
		}
		if err := read(k); err != nil {
			return err
		}
		r.Manifest.ResolutionsRead++
	}
	if len(r.failures) == 0 || resolvedFrom == 1 {
		return nil
	}
	var since time.Time
	for _, t := range r.failures {
		if since.IsZero() || t.Before(since) {
			since = t
		}
	}
	since = since.Add(-SegmentSkew)
	keys = keys[:0]
	upTo := "" // names sort as their sequences: list no further than the segments without resolutions
	if resolvedFrom > 1 {
		upTo = manifest.SegmentKey(o.Prefix, n.Job, resolvedFrom-1)
	}
	if err := o.Manifests.ListObjects(ctx, manifest.Dir(o.Prefix, n.Job), "", upTo, func(ob blobstore.Object) error {
		seq, ok := manifest.SegmentSeq(ob.Key)
		if !ob.LastModified.Before(since) && (resolvedFrom == 0 || !ok || seq < resolvedFrom) {
			keys = append(keys, ob.Key)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("report: list manifest segments: %w", err)
	}
	for _, k := range keys {
		if err := read(k); err != nil {
			return err
		}
		r.Manifest.Read++
		if len(r.failures) == 0 {
			break
		}
	}
	return nil
}

// Buckets turns counts by minute (Unix seconds) into one bucket per minute from first to last,
// empty minutes included: a stall shows as zeros.
func Buckets(minutes map[int64]uint64, first, last time.Time) []Bucket {
	var out []Bucket
	for m := first.Truncate(time.Minute); !m.After(last); m = m.Add(time.Minute) {
		out = append(out, Bucket{Minute: m, Verified: minutes[m.Unix()]})
	}
	return out
}

// exportDLQ writes every dead letter to dlq-keys.txt and dlq.jsonl and keeps samples for
// report.md.
func (r *Report) exportDLQ(ctx context.Context, js jetstream.JetStream, n bus.Names, dir string) error {
	kf, err := os.Create(filepath.Join(dir, FileKeys))
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer kf.Close()
	ef, err := os.Create(filepath.Join(dir, FileEntries))
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer ef.Close()
	kw, ew := bufio.NewWriter(kf), bufio.NewWriter(ef)
	enc := json.NewEncoder(ew)
	if r.DeadLettered > 0 {
		if _, err := deadletter.Each(ctx, js, n, deadletter.Filter{}, 0, func(d deadletter.Entry) error {
			e := Entry{Key: d.Key, Stage: d.Stage, Reason: d.Reason, Error: d.Err, Attempts: d.Attempt, Origin: d.Origin, Seq: d.Seq}
			if strings.ContainsAny(e.Key, "\r\n") {
				r.LineBreaks++
			} else if _, err := kw.WriteString(e.Key + "\n"); err != nil {
				return err
			}
			if e.Reason != bus.ReasonDeleted {
				if t, ok := r.failures[e.Key]; !ok || d.Time.After(t) {
					r.failures[e.Key] = d.Time.UTC()
				}
			}
			sr := e.Stage + "/" + e.Reason
			if len(r.Samples[sr]) < KeysPerReason {
				r.Samples[sr] = append(r.Samples[sr], e)
			}
			return enc.Encode(e)
		}); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	for _, f := range []struct {
		w *bufio.Writer
		f *os.File
	}{{kw, kf}, {ew, ef}} {
		if err := f.w.Flush(); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if err := f.f.Close(); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	return nil
}

func writeFile(path string, fill func(*bufio.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	w := bufio.NewWriter(f)
	err = fill(w)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	return nil
}

// sortedKeys returns m's keys, most first, then by name.
func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

// reconcile sets Unaccounted: every key published to KEYS must be verified, dead-lettered by a
// stage after KEYS, or still in flight; the producer's dead letters never reached KEYS.
func (r *Report) reconcile() {
	r.Unaccounted = int64(r.Published) - int64(r.Verified+deadletter.Counts(r.DeadLetters).AfterKeys()+r.InFlight)
}

// Discrepancy says, in one sentence, what Unaccounted means; "" when it is 0.
func (r *Report) Discrepancy() string {
	switch {
	case r.Unaccounted > 0:
		return fmt.Sprintf("%d published keys are in none of verified, dead-lettered or in flight: "+
			"while stages run, a key between two streams counts once late; at rest, look for them with `ferry diff` "+
			"(orphans the sweep requeued count twice in published)", r.Unaccounted)
	case r.Unaccounted < 0:
		return fmt.Sprintf("%d verified or dead-lettered entries that no published key accounts for: "+
			"messages published straight into BLOBS, UPLOADED or DONE (forged, or by hand), or a key verified twice; "+
			"compare DONE's keys with the key list (`ferry diff`)", -r.Unaccounted)
	}
	return ""
}
