package manifest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/deadletter"
)

// StateKey is the KV key (job's KV) of the drain's State.
const StateKey = "manifest.done"

// State is what the drain has moved out of DONE: DONE entries below NextSeq are in segments
// (or counted Lost), and the totals are theirs.
type State struct {
	NextSeq    uint64 `json:"next_seq"` // the first DONE sequence not in a segment
	Segments   uint64 `json:"segments"`
	Entries    uint64 `json:"entries"`
	Superseded uint64 `json:"superseded"` // entries of messages whose key holds newer bytes
	Bytes      uint64 `json:"bytes"`      // of the entries' blobs
	Lost       uint64 `json:"lost"`       // DONE entries gone before the drain came to them
	// DoneCreated is when the DONE stream the state was made from was created: a DONE deleted
	// and set up again restarts its sequences under the same state.
	DoneCreated time.Time `json:"done_created"`
	First       time.Time `json:"first_verified"`
	Last        time.Time `json:"last_verified"`
	// Minutes are entries per minute (Unix seconds of its start) of the last KeepMinutes before
	// Last; older minutes are summed into Hours, so the state stays small for months.
	Minutes map[int64]uint64 `json:"minutes"`
	Hours   map[int64]uint64 `json:"hours"`
	// ResolvedFrom is the first DONE sequence from which every segment has its resolutions
	// written beside it (ResolvedKey): 1 for a job drained by this ferry from the start, 0 until
	// the first round. A drain of an older ferry drops the field when it records the state, so a
	// segment without resolutions is always below it.
	ResolvedFrom uint64 `json:"resolved_from,omitempty"`
}

// Undrained is how many of DONE's entries are not drained yet, from DONE's state read after s:
// not what DONE holds, since a drain that died between recording its state and purging DONE
// left entries that are in a segment too.
func (s State) Undrained(done jetstream.StreamState) uint64 {
	if s.NextSeq == 0 {
		return done.Msgs
	}
	return done.LastSeq + 1 - min(s.NextSeq, done.LastSeq+1)
}

// KeepMinutes is how much of the per-minute history the state keeps.
const KeepMinutes = 24 * time.Hour

func (s *State) add(entries []Entry) {
	if s.Minutes == nil {
		s.Minutes = map[int64]uint64{}
	}
	if s.Hours == nil {
		s.Hours = map[int64]uint64{}
	}
	for _, e := range entries {
		t := e.Stored.UTC()
		s.Entries++
		if e.Record.Superseded != 0 {
			s.Superseded++
		}
		if e.Record.Size > 0 {
			s.Bytes += uint64(e.Record.Size)
		}
		if s.First.IsZero() || t.Before(s.First) {
			s.First = t
		}
		if t.After(s.Last) {
			s.Last = t
		}
		s.Minutes[t.Truncate(time.Minute).Unix()]++
	}
	floor := s.Last.Add(-KeepMinutes).Unix()
	for m, n := range s.Minutes {
		if m < floor {
			s.Hours[m-m%3600] += n
			delete(s.Minutes, m)
		}
	}
}

// Store is where segments are written and read: the destination bucket or the one the job file
// names for manifests.
type Store interface {
	Bucket() string
	Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error)
	Get(ctx context.Context, key string) ([]byte, error)
	ListObjects(ctx context.Context, prefix, after, upTo string, fn func(blobstore.Object) error) error
}

// Drain moves DONE's entries into segments.
type Drain struct {
	JS     jetstream.JetStream
	Names  bus.Names
	Store  Store
	Prefix string // manifest.prefix; segments are Prefix + job + "/done/"
	// MinAge keeps the newest entries in DONE (status's rate of the last minute reads them).
	MinAge time.Duration
	Batch  int // entries per segment at most
	// Bucket is the destination bucket, a segment's first column (S3 Batch Operations reads it as
	// where the object is); "" is the Store's.
	Bucket string
	Log    *slog.Logger
	Now    func() time.Time

	entries, segments, failures prometheus.Counter // nil: not counted
	createOnce                  bool               // the store refused to replace ProbeKey

	// failed are the keys with a failure dead letter (any reason but deleted), as FNV-64a hashes
	// (a collision only writes one resolution too many), read from the DLQ up to dlq.
	failed map[uint64]struct{}
	dlq    deadletter.Cursor
}

// ProbeKey is the object a drain writes twice, create-only, before its first segment (not
// before: a run shorter than --min-age writes nothing): an S3 that
// ignores If-None-Match replaces it, and two drains there could replace each other's segments.
func ProbeKey(prefix, job string) string { return prefix + job + "/if-none-match" }

// checkCreateOnce refuses a store that ignores If-None-Match: there a drain racing another (a
// rolling update's surge) could replace the segment the other recorded and purged from DONE with
// a shorter one, and the entries between would be in no segment.
func (d *Drain) checkCreateOnce(ctx context.Context) error {
	if d.createOnce {
		return nil
	}
	key := ProbeKey(d.Prefix, d.Names.Job)
	body := []byte("ferry manifest: written only if absent, to check that this S3 honours If-None-Match\n")
	sum := md5.Sum(body)
	for range 2 {
		_, err := d.Store.Put(ctx, blobstore.PutInput{Key: key, Body: body, MD5: sum[:], ContentType: "text/plain", IfAbsent: true})
		if errors.Is(err, blobstore.ErrExists) {
			d.createOnce = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("manifest: write %s: %w", key, err)
		}
	}
	return fmt.Errorf("manifest: s3://%s/%s was replaced by a write made only if absent: this S3 ignores If-None-Match, and the drain needs it (two drains could replace each other's segments)", d.Store.Bucket(), key)
}

// Defaults of `ferry manifest`.
const (
	DefaultEvery  = time.Minute
	DefaultMinAge = 2 * time.Minute
	DefaultBatch  = 100_000
)

// Dir is the folder of the job's DONE segments.
func Dir(prefix, job string) string { return prefix + job + "/done/" }

// SegmentKey is the object of the segment that starts the chain at DONE sequence seq: its name is
// the drain's state, not its content, so that a drain restarted after writing it (or a second
// drain) finds it instead of writing an overlapping one.
func SegmentKey(prefix, job string, seq uint64) string {
	return fmt.Sprintf("%s%020d.csv.gz", Dir(prefix, job), seq)
}

// ResolvedKey is the object beside the segment SegmentKey(prefix, job, seq) that holds, in the
// segment's format, its entries whose key had a failure dead letter when the drain wrote it. A
// report resolves failures from these (one object per segment that has any) instead of reading
// every segment written since the first failure: a key never found on day one would otherwise
// cost every report the whole manifest.
func ResolvedKey(prefix, job string, seq uint64) string {
	return fmt.Sprintf("%s%020d.csv.gz", ResolvedDir(prefix, job), seq)
}

// ResolvedDir is the folder of the job's resolutions.
func ResolvedDir(prefix, job string) string { return prefix + job + "/resolved/" }

// SegmentSeq is the DONE sequence a segment's or a resolution's object name starts at.
func SegmentSeq(key string) (uint64, bool) {
	i := strings.LastIndexByte(key, '/')
	name, ok := strings.CutSuffix(key[i+1:], ".csv.gz")
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(name, 10, 64)
	return seq, err == nil
}

// Result is what one Round did.
type Result struct {
	Entries int
	First   uint64
	Last    uint64
	Lost    uint64
	Segment string
	Adopted bool // the segment was there already (a drain before a crash, or another drain)
}

// ErrRaced is a round whose state update lost to another drain: nothing is lost, the next round
// starts where that drain left off.
var ErrRaced = errors.New("another drain moved the manifest on")

// LoadState reads the drain's state and its KV revision (0: none yet).
func LoadState(ctx context.Context, kv jetstream.KeyValue) (State, uint64, error) {
	var s State
	e, err := kv.Get(ctx, StateKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return s, 0, nil
	}
	if err != nil {
		return s, 0, fmt.Errorf("read %s: %w", StateKey, err)
	}
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return s, 0, fmt.Errorf("read %s: %w", StateKey, err)
	}
	return s, e.Revision(), nil
}

// Round writes one segment of the DONE entries older than MinAge, if there are any, records it
// and purges them from DONE. The order makes every crash safe: the segment is created only if
// absent (a leftover from a crash is adopted as it is), the state moves on by compare-and-set,
// and DONE is purged only below the state's NextSeq (again at the start of every round, should a
// crash have come between).
func (d *Drain) Round(ctx context.Context) (Result, error) {
	var res Result
	kv, err := d.JS.KeyValue(ctx, d.Names.KV)
	if err != nil {
		return res, fmt.Errorf("manifest: kv %s: %w", d.Names.KV, err)
	}
	st, rev, err := LoadState(ctx, kv)
	if err != nil {
		return res, fmt.Errorf("manifest: %w", err)
	}
	if st.NextSeq == 0 {
		st.NextSeq = 1
	}
	if st.ResolvedFrom == 0 {
		st.ResolvedFrom = st.NextSeq
	}
	s, err := d.JS.Stream(ctx, d.Names.Done)
	if err != nil {
		return res, fmt.Errorf("manifest: stream %s: %w", d.Names.Done, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("manifest: stream info %s: %w", d.Names.Done, err)
	}
	if !st.DoneCreated.IsZero() && !st.DoneCreated.Equal(info.Created) || info.State.LastSeq+1 < st.NextSeq {
		// Purging below NextSeq would remove entries that are in no segment.
		return res, fmt.Errorf("manifest: %s (created %s, last sequence %d) is not the stream %s records (created %s, next sequence %d): nothing drained; move the job's segments and %s away to start a new ledger",
			d.Names.Done, info.Created.UTC().Format(time.RFC3339Nano), info.State.LastSeq, StateKey, st.DoneCreated.Format(time.RFC3339Nano), st.NextSeq, StateKey)
	}
	if st.DoneCreated.IsZero() {
		st.DoneCreated = info.Created.UTC()
	}
	if info.State.Msgs > 0 && info.State.FirstSeq < st.NextSeq {
		if err := d.purge(ctx, s, st.NextSeq); err != nil {
			return res, err
		}
	}
	if info.State.LastSeq < st.NextSeq {
		return res, nil
	}
	entries, err := d.read(ctx, s, st.NextSeq, d.Now().Add(-d.MinAge))
	if err != nil {
		return res, err
	}
	if len(entries) == 0 {
		// Nothing old enough; but what is below DONE's first sequence is gone for good, and a DONE
		// emptied by hand must show it now, not when a later entry reveals the gap.
		if info.State.FirstSeq <= st.NextSeq {
			return res, nil
		}
		res.Lost = info.State.FirstSeq - st.NextSeq
		d.Log.Error("DONE entries gone before the manifest drain read them: they are in no segment (DONE purged or limited by someone else?)",
			"from", st.NextSeq, "to", info.State.FirstSeq-1, "count", res.Lost)
		st.Lost += res.Lost
		st.NextSeq = info.State.FirstSeq
		return res, d.record(ctx, kv, st, rev)
	}
	// Only now, with a segment to write: a job that never drains writes nothing to S3.
	if err := d.checkCreateOnce(ctx); err != nil {
		return res, err
	}
	key := SegmentKey(d.Prefix, d.Names.Job, st.NextSeq)
	res.Segment = key
	bucket := d.Bucket
	if bucket == "" {
		bucket = d.Store.Bucket()
	}
	body, err := encode(bucket, entries)
	if err != nil {
		return res, fmt.Errorf("manifest: encode %s: %w", key, err)
	}
	sum := md5.Sum(body)
	_, err = d.Store.Put(ctx, blobstore.PutInput{Key: key, Body: body, MD5: sum[:], ContentType: "application/gzip", IfAbsent: true,
		Metadata: map[string]string{"ferry-job": d.Names.Job, "ferry-first-seq": strconv.FormatUint(entries[0].Seq, 10),
			"ferry-last-seq": strconv.FormatUint(entries[len(entries)-1].Seq, 10), "ferry-entries": strconv.Itoa(len(entries))}})
	if errors.Is(err, blobstore.ErrExists) {
		// Written from the same DONE entries (DONE is purged only below NextSeq), perhaps fewer or
		// more of them: its content decides where this segment ends.
		entries = nil // not held twice: a batch is hundreds of bytes an entry
		if entries, err = d.readSegment(ctx, key); err != nil {
			return res, err
		}
		// Its name is all that says it is ours: a job deleted and set up again restarts DONE at 1
		// beside the old job's segments, and anyone may have written there. Adopting what DONE
		// did not produce would purge entries that are in no segment.
		if err := d.matches(ctx, s, entries); err != nil {
			if _, now, lerr := LoadState(ctx, kv); lerr == nil && now != rev {
				return res, fmt.Errorf("manifest: %w: %v", ErrRaced, err)
			}
			return res, fmt.Errorf("manifest: %s is not what DONE holds from sequence %d, not adopted: DONE keeps its entries until it is moved away (a job deleted and set up again leaves its old segments): %w", key, st.NextSeq, err)
		}
		res.Adopted = true
	} else if err != nil {
		return res, fmt.Errorf("manifest: write %s: %w", key, err)
	}
	if len(entries) == 0 || entries[0].Seq < st.NextSeq {
		return res, fmt.Errorf("manifest: segment %s does not start at DONE sequence %d or later", key, st.NextSeq)
	}
	// Before the state moves past them: once DONE is purged, this is where a report finds them.
	// The DLQ is read after these entries were stored, so it holds every dead letter stored
	// before them, whatever the clocks.
	if err := d.readFailures(ctx); err != nil {
		return res, err
	}
	if err := d.writeResolved(ctx, bucket, st.NextSeq, entries); err != nil {
		return res, err
	}
	res.Entries, res.First, res.Last = len(entries), entries[0].Seq, entries[len(entries)-1].Seq
	// Gaps before the first entry and between entries (a message deleted by hand) alike.
	res.Lost = res.Last - st.NextSeq + 1 - uint64(len(entries))
	if res.Lost > 0 {
		d.Log.Error("DONE entries gone before the manifest drain read them: they are in no segment (DONE purged or limited by someone else?)",
			"from", st.NextSeq, "to", res.Last, "count", res.Lost)
	}
	st.add(entries)
	st.Lost += res.Lost
	st.Segments++
	st.NextSeq = res.Last + 1
	if err := d.record(ctx, kv, st, rev); err != nil {
		return res, err
	}
	if d.entries != nil {
		d.entries.Add(float64(res.Entries))
		d.segments.Inc()
	}
	return res, d.purge(ctx, s, st.NextSeq)
}

// record replaces the state read at revision rev (0: none yet) with st, unless another drain
// moved it on (ErrRaced).
func (d *Drain) record(ctx context.Context, kv jetstream.KeyValue, st State, rev uint64) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if rev == 0 {
		_, err = kv.Create(ctx, StateKey, b)
	} else {
		_, err = kv.Update(ctx, StateKey, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
		return fmt.Errorf("manifest: %w: %v", ErrRaced, err)
	}
	if err != nil {
		return fmt.Errorf("manifest: record %s: %w", StateKey, err)
	}
	return nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// purge removes DONE's entries below seq: they are in segments.
func (d *Drain) purge(ctx context.Context, s jetstream.Stream, seq uint64) error {
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(seq)); err != nil {
		return fmt.Errorf("manifest: purge %s below %d: %w", d.Names.Done, seq, err)
	}
	return nil
}

// readFailures reads the dead letters stored since the last call into d.failed.
func (d *Drain) readFailures(ctx context.Context) error {
	if d.failed == nil {
		d.failed = map[uint64]struct{}{}
	}
	if err := deadletter.Since(ctx, d.JS, d.Names, &d.dlq, func(e deadletter.Entry) error {
		if e.Reason != bus.ReasonDeleted {
			d.failed[keyHash(e.Key)] = struct{}{}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

func keyHash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// writeResolved writes ResolvedKey(seq) with the entries whose key has a failure dead letter, if
// any, and those it holds already: a drain that adopts another's segment may know fewer dead
// letters than the one that wrote it. Every entry is one of the same segment's, and a report
// takes only an entry stored after a key's dead letter as its resolution, so one too many costs
// nothing and one too few withholds the proof.
func (d *Drain) writeResolved(ctx context.Context, bucket string, seq uint64, entries []Entry) error {
	var found []Entry
	for _, e := range entries {
		if _, ok := d.failed[keyHash(e.Record.Key)]; ok {
			found = append(found, e)
		}
	}
	if len(found) == 0 {
		return nil // most rounds: no S3 request
	}
	key := ResolvedKey(d.Prefix, d.Names.Job, seq)
	res, err := d.readSegment(ctx, key)
	if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		return err
	}
	had := map[uint64]bool{}
	for _, e := range res {
		had[e.Seq] = true
	}
	added := 0
	for _, e := range found {
		if !had[e.Seq] {
			res = append(res, e)
			added++
		}
	}
	if added == 0 {
		return nil
	}
	slices.SortFunc(res, func(a, b Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	body, err := encode(bucket, res)
	if err != nil {
		return fmt.Errorf("manifest: encode %s: %w", key, err)
	}
	sum := md5.Sum(body)
	if _, err := d.Store.Put(ctx, blobstore.PutInput{Key: key, Body: body, MD5: sum[:], ContentType: "application/gzip",
		Metadata: map[string]string{"ferry-job": d.Names.Job, "ferry-entries": strconv.Itoa(len(res))}}); err != nil {
		return fmt.Errorf("manifest: write %s: %w", key, err)
	}
	return nil
}

// read returns up to Batch entries of DONE from sequence from on, stored before cutoff.
func (d *Drain) read(ctx context.Context, s jetstream.Stream, from uint64, cutoff time.Time) ([]Entry, error) {
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: from, HeadersOnly: true, InactiveThreshold: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s: %w", d.Names.Done, err)
	}
	if ci := c.CachedInfo(); ci == nil || ci.NumPending == 0 {
		return nil, nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(min(d.Batch, 1000)))
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s: %w", d.Names.Done, err)
	}
	defer it.Stop()
	var out []Entry
	var bad int // entries with a header that does not decode: one line a round, not one an entry
	var firstBad error
	defer func() {
		if bad > 0 {
			d.Log.Warn("DONE entries with a bad header, kept as far as they decode", "count", bad, "first", firstBad)
		}
	}()
	for len(out) < d.Batch {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			return nil, fmt.Errorf("manifest: read %s: %w", d.Names.Done, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("manifest: read %s: %w", d.Names.Done, err)
		}
		if md.Timestamp.After(cutoff) {
			break
		}
		rec, err := bus.DecodeRecord(m.Headers())
		if err != nil {
			// Kept as far as it decodes: the entry is counted and its key is in the segment.
			if bad++; bad == 1 {
				firstBad = fmt.Errorf("DONE sequence %d: %w", md.Sequence.Stream, err)
			}
		}
		out = append(out, Entry{Seq: md.Sequence.Stream, Stored: md.Timestamp.UTC(), Record: rec})
		if md.NumPending == 0 {
			break
		}
	}
	return out, nil
}

// matches checks that seg is what DONE holds at its sequences: each entry's sequence, stored
// time and Ferry-Id, in order.
func (d *Drain) matches(ctx context.Context, s jetstream.Stream, seg []Entry) error {
	if len(seg) == 0 {
		return errors.New("no entries")
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: seg[0].Seq, HeadersOnly: true, InactiveThreshold: time.Minute})
	if err != nil {
		return fmt.Errorf("read %s: %w", d.Names.Done, err)
	}
	if ci := c.CachedInfo(); ci == nil || ci.NumPending < uint64(len(seg)) {
		return fmt.Errorf("%d entries, DONE holds fewer from sequence %d", len(seg), seg[0].Seq)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(min(len(seg), 1000)))
	if err != nil {
		return fmt.Errorf("read %s: %w", d.Names.Done, err)
	}
	defer it.Stop()
	for _, e := range seg {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", d.Names.Done, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", d.Names.Done, err)
		}
		rec, _ := bus.DecodeRecord(m.Headers())
		if md.Sequence.Stream != e.Seq || !md.Timestamp.Equal(e.Stored) || rec.ID != e.Record.ID {
			return fmt.Errorf("its entry of DONE sequence %d (%s, stored %s) is not DONE's %d (%s, stored %s)",
				e.Seq, e.Record.ID, e.Stored.Format(time.RFC3339Nano), md.Sequence.Stream, rec.ID, md.Timestamp.UTC().Format(time.RFC3339Nano))
		}
	}
	return nil
}

func (d *Drain) readSegment(ctx context.Context, key string) ([]Entry, error) {
	b, err := d.Store.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s: %w", key, err)
	}
	var out []Entry
	if err := Decode(bytes.NewReader(b), func(e Entry) error { out = append(out, e); return nil }); err != nil {
		return nil, fmt.Errorf("manifest: %s: %w", key, err)
	}
	return out, nil
}

// DrainAll runs rounds until one finds nothing old enough: what it moved, in entries and segments.
func (d *Drain) DrainAll(ctx context.Context) (entries, segments int, err error) {
	for {
		res, err := d.Round(ctx)
		if err != nil {
			return entries, segments, err
		}
		if res.Entries == 0 {
			return entries, segments, nil
		}
		entries += res.Entries
		segments++
	}
}

// State reads the drain's state.
func (d *Drain) State(ctx context.Context) (State, error) {
	kv, err := d.JS.KeyValue(ctx, d.Names.KV)
	if err != nil {
		return State{}, fmt.Errorf("manifest: kv %s: %w", d.Names.KV, err)
	}
	st, _, err := LoadState(ctx, kv)
	return st, err
}

// Run drains every interval until ctx ends. A failed round is logged and tried again at the next
// tick: DONE keeps the entries meanwhile.
func (d *Drain) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, _, err := d.DrainAll(ctx); err != nil && ctx.Err() == nil {
			level := slog.LevelWarn
			if errors.Is(err, ErrRaced) {
				level = slog.LevelDebug
			}
			d.Log.Log(ctx, level, "manifest round failed; DONE keeps its entries until the next", "err", err)
			if d.failures != nil {
				d.failures.Inc()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Verified is the number of entries DONE ever stored: its last sequence, which counts the entries
// drained into segments as well as those still in it (a stream's sequence never goes back, and
// duplicates are never stored).
func Verified(ctx context.Context, js jetstream.JetStream, n bus.Names) (uint64, error) {
	s, err := js.Stream(ctx, n.Done)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", n.Done, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info %s: %w", n.Done, err)
	}
	return info.State.LastSeq, nil
}
