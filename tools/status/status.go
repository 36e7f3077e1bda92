// Package status is `ferry status`: one screen of a job's state read from NATS alone — each
// stage's backlog as `nats consumer info` shows it, verified keys and their rate, dead letters by
// stage and reason, the producer's position and an ETA. It only looks things up: it never creates
// a stream, a durable consumer or a bucket, so it can run from any machine that reaches NATS.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/service"
)

// RateWindow is the span the verified and dead-letter rates are counted over.
const RateWindow = time.Minute

// Status is one snapshot of a job. Field names in JSON are stable: scripts read them.
type Status struct {
	Job         string      `json:"job"`
	Time        time.Time   `json:"time"`
	Stages      []Stage     `json:"stages"`
	Verified    Verified    `json:"verified"`
	DeadLetters DeadLetters `json:"dead_letters"`
	// Unaccounted is KEYS' published − (verified + dead letters after KEYS + messages in KEYS,
	// BLOBS and UPLOADED): 0 at rest when every published key is in exactly one place. While the
	// stages run it moves by a few (a key between two streams); a difference that stays means
	// lost keys (above 0) or entries no published key accounts for (below 0: forged messages).
	Unaccounted int64 `json:"unaccounted"`
	// Backlog is every message still in a work queue (KEYS, BLOBS, UPLOADED, ADVISORIES).
	Backlog uint64 `json:"backlog"`
	// ETASeconds is Backlog over the rate at which keys end (verified or dead-lettered) in the
	// last RateWindow; null when nothing ended in it or the backlog is empty. Keys the producer
	// has not published yet are not counted.
	ETASeconds *float64 `json:"eta_seconds"`
	Producer   Producer `json:"producer"`
}

// Stage is a work queue and its durable consumer: the numbers `nats stream info` and
// `nats consumer info` show.
type Stage struct {
	Stage    string `json:"stage"`
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Partitions is how many streams the row sums (the job's --partitions; omitted for one):
	// Stream is then the queue's name, its streams Stream_0 … Stream_<N-1>.
	Partitions int    `json:"partitions,omitempty"`
	Messages   uint64 `json:"messages"` // in the stream (delivered but unacked ones included)
	Bytes      uint64 `json:"bytes"`
	// Published is the stream's last sequence: every message ever stored in it.
	Published   uint64 `json:"published"`
	Pending     uint64 `json:"pending"`     // NumPending: not yet delivered
	AckPending  int    `json:"ack_pending"` // delivered, not yet acked
	Redelivered int    `json:"redelivered"` // redelivered and not yet acked
	Waiting     int    `json:"waiting"`     // pull requests waiting
	// Processed is Published − Messages: messages that left the work queue, acked (done with this
	// stage) or terminated (dead-lettered).
	Processed uint64 `json:"processed"`
	// PerSecond is Processed's growth per second between samples (`--watch` only); null in a
	// single snapshot.
	PerSecond *float64 `json:"per_second"`
	// Orphaned is Messages − Pending − AckPending, less the stage's max-deliveries advisories
	// still waiting for the advisor (0 if negative, and 0 while the consumer does not exist):
	// messages in the work queue that its consumer will neither deliver nor wait for an ack of.
	// NATS cluster bugs can leave such messages after a consumer leader change (nats-server
	// #4736, #7680); the consumer never delivers them: every service's sweeper requeues them
	// within about a minute, and `ferry repair` does it on demand.
	//
	// It can be above 0 for a moment without any bug: an ack moves the consumer's numbers before
	// the work queue deletes the message, and the stream and consumer info are two requests. Only
	// a count that stays across snapshots means orphans; `ferry repair` acts only on messages that
	// are provably orphaned (at or below the consumer's ack floor, still there after a pause).
	Orphaned uint64 `json:"orphaned"`
}

// Orphans is Stage.Orphaned's arithmetic: messages in a work queue minus those its consumer
// has pending or ack-pending and those the advisor has yet to dead-letter, at least 0.
func Orphans(messages, pending uint64, ackPending int, awaitingAdvisor uint64) uint64 {
	held := pending + uint64(max(ackPending, 0)) + awaitingAdvisor
	if messages <= held {
		return 0
	}
	return messages - held
}

// Verified is the DONE stream: one entry per verified key, the older ones drained into manifest
// segments by `ferry manifest`.
type Verified struct {
	Stream string `json:"stream"`
	// Messages are the entries DONE ever stored (its last sequence): those in it and those drained.
	Messages uint64 `json:"messages"`
	InStream uint64 `json:"in_stream"` // entries DONE holds that are not drained yet
	Bytes    uint64 `json:"bytes"`     // of those
	// Drained are the entries in manifest segments; Lost those gone from DONE before the drain
	// read them (0 unless DONE was purged by hand).
	Drained    uint64 `json:"drained"`
	Segments   uint64 `json:"segments"`
	Lost       uint64 `json:"lost"`
	LastMinute uint64 `json:"last_minute"` // entries stored in the last RateWindow
	// WindowSeconds is what LastMinute is divided by: RateWindow, or less when the stream's first
	// entry is younger (a job that started 20 s ago is not averaged over a minute).
	WindowSeconds float64 `json:"window_seconds"`
	PerSecond     float64 `json:"per_second"`
}

// DeadLetters are the DLQ's entries by "stage/reason" (as `ferry dlq ls`).
type DeadLetters struct {
	Total         uint64            `json:"total"`
	LastMinute    uint64            `json:"last_minute"`
	WindowSeconds float64           `json:"window_seconds"` // as Verified's
	ByReason      map[string]uint64 `json:"by_reason"`
}

// Producer is what the producer's checkpoints in the job's KV say.
type Producer struct {
	Lists []checkpoint.List `json:"lists"`
	Scans []Scan            `json:"scans"`
}

// Scan is a token-range scan's progress: of its last pass, Pass.
type Scan struct {
	Key        string  `json:"key"` // KV key of the plan, scan.<digest>
	Table      string  `json:"table"`
	KeyColumn  string  `json:"key_column"`
	Pass       int     `json:"pass"` // the pass the progress below is of: the last (1 for a scan saved before passes)
	Ranges     int     `json:"ranges"`
	RangesDone int     `json:"ranges_done"`
	Fraction   float64 `json:"fraction"` // share of the token ring whose keys are all published
	Keys       int64   `json:"keys"`     // keys read (re-reads after a restart included)
	// Passes are the scan's pass records, first to last. The last one's scanned and published
	// counts are its range checkpoints' while it runs (its record has them once it stops).
	Passes []checkpoint.Pass `json:"passes"`
}

// Collect reads the job's state. It creates nothing but short-lived ordered consumers on DONE and
// the DLQ (deleted again) to count what arrived since now − RateWindow.
func Collect(ctx context.Context, js jetstream.JetStream, n bus.Names, now time.Time) (*Status, error) {
	st := &Status{Job: n.Job, Time: now.UTC()}
	type queue struct{ stage, stream, consumer string }
	var queues []queue
	for _, q := range []queue{{bus.StageFetcher, n.Keys, n.Fetcher}, {bus.StageUploader, n.Blobs, n.Uploader}, {bus.StageVerifier, n.Uploaded, n.Verifier}} {
		for _, stream := range n.Streams(q.stream) {
			queues = append(queues, queue{q.stage, stream, q.consumer})
		}
	}
	queues = append(queues, queue{bus.StageAdvisor, n.Advisories, n.Advisor})
	var parts []Stage // a row per stream: orphans are counted per consumer, then summed
	for _, q := range queues {
		s, err := service.JobStream(ctx, js, n, q.stream)
		if err != nil {
			return nil, err
		}
		si, err := s.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream info %s: %w", q.stream, err)
		}
		sg := Stage{Stage: q.stage, Stream: q.stream, Consumer: q.consumer, Messages: si.State.Msgs,
			Bytes: si.State.Bytes, Published: si.State.LastSeq, Processed: si.State.LastSeq - min(si.State.Msgs, si.State.LastSeq)}
		c, err := s.Consumer(ctx, q.consumer)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("consumer %s on %s: %w", q.consumer, q.stream, err)
		}
		if err == nil { // a missing consumer shows zeros: its stage has never started
			ci := c.CachedInfo()
			sg.Pending, sg.AckPending, sg.Redelivered, sg.Waiting = ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting
			sg.Orphaned = Orphans(sg.Messages, sg.Pending, sg.AckPending, 0) // less the advisor's share below
		}
		parts = append(parts, sg)
		st.Backlog += sg.Messages
	}
	if err := subtractAdvisories(ctx, js, n, parts); err != nil {
		return nil, err
	}
	st.Stages = sumPartitions(n, parts)

	since := now.Add(-RateWindow)
	done, err := service.JobStream(ctx, js, n, n.Done)
	if err != nil {
		return nil, err
	}
	// The drain's state before DONE's info: DONE's last sequence then covers every entry the
	// state recorded, and a drain moving on between the two reads counts nothing twice.
	var ms manifest.State
	if kv, err := js.KeyValue(ctx, n.KV); err == nil {
		if ms, _, err = manifest.LoadState(ctx, kv); err != nil {
			return nil, err
		}
	}
	di, err := done.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info %s: %w", n.Done, err)
	}
	st.Verified = Verified{Stream: n.Done, Messages: di.State.LastSeq, InStream: ms.Undrained(di.State), Bytes: di.State.Bytes,
		Drained: ms.Entries, Segments: ms.Segments, Lost: ms.Lost}
	first := di.State.FirstTime
	if ms.Entries+ms.Lost > 0 {
		first = ms.First // DONE's first entry is the oldest not drained, not the job's first
	}
	if st.Verified.LastMinute, err = CountSince(ctx, done, since); err != nil {
		return nil, err
	}
	st.Verified.WindowSeconds = window(now, first)
	st.Verified.PerSecond = float64(st.Verified.LastMinute) / st.Verified.WindowSeconds

	counts, err := deadletter.Count(ctx, js, n)
	if err != nil {
		return nil, err
	}
	st.DeadLetters = DeadLetters{Total: counts.Total(), ByReason: counts}
	st.reconcile(counts.AfterKeys())
	dq, err := service.JobStream(ctx, js, n, n.DLQ)
	if err != nil {
		return nil, err
	}
	if st.DeadLetters.LastMinute, err = CountSince(ctx, dq, since); err != nil {
		return nil, err
	}
	st.DeadLetters.WindowSeconds = window(now, dq.CachedInfo().State.FirstTime)

	ended := st.Verified.PerSecond + float64(st.DeadLetters.LastMinute)/st.DeadLetters.WindowSeconds
	if st.Backlog > 0 && ended > 0 {
		eta := math.Round(float64(st.Backlog) / ended)
		st.ETASeconds = &eta
	}
	if st.Producer, err = ReadProducer(ctx, js, n); err != nil {
		return nil, err
	}
	return st, nil
}

// AwaitingAdvisor counts the max-deliveries advisories in the job's ADVISORIES stream by the
// work queue they are about. Each stands for a message that ran out of deliveries: it stays in
// its work queue below the consumer's ack floor until the advisor dead-letters and deletes it.
func AwaitingAdvisor(ctx context.Context, js jetstream.JetStream, n bus.Names) (map[string]uint64, error) {
	s, err := service.JobStream(ctx, js, n, n.Advisories)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return nil, fmt.Errorf("stream info %s: %w", n.Advisories, err)
	}
	by := map[string]uint64{}
	for subj, k := range info.State.Subjects {
		if stream, _, ok := strings.Cut(strings.TrimPrefix(subj, bus.AdvisoryPrefix), "."); ok && strings.HasPrefix(subj, bus.AdvisoryPrefix) {
			by[stream] += k
		}
	}
	return by, nil
}

// subtractAdvisories takes the messages waiting for the advisor out of the stages' orphan counts.
// Only asked when some stage has one: the common case costs no request.
// sumPartitions merges the rows of a partitioned work queue's streams into one row per stage,
// named for the queue, with Partitions set.
func sumPartitions(n bus.Names, parts []Stage) []Stage {
	var stages []Stage
	for _, p := range parts {
		i := slices.IndexFunc(stages, func(s Stage) bool { return s.Stage == p.Stage })
		if i < 0 {
			if base := n.Base(p.Stream); base != "" && n.Partitions > 1 {
				p.Stream, p.Partitions = base, 1
			}
			stages = append(stages, p)
			continue
		}
		s := &stages[i]
		s.Partitions++
		s.Messages += p.Messages
		s.Bytes += p.Bytes
		s.Published += p.Published
		s.Processed += p.Processed
		s.Pending += p.Pending
		s.AckPending += p.AckPending
		s.Redelivered += p.Redelivered
		s.Waiting += p.Waiting
		s.Orphaned += p.Orphaned
	}
	return stages
}

func subtractAdvisories(ctx context.Context, js jetstream.JetStream, n bus.Names, stages []Stage) error {
	if !slices.ContainsFunc(stages, func(s Stage) bool { return s.Orphaned > 0 }) {
		return nil
	}
	by, err := AwaitingAdvisor(ctx, js, n)
	if err != nil {
		return err
	}
	for i, s := range stages {
		if s.Orphaned > 0 {
			stages[i].Orphaned = Orphans(s.Messages, s.Pending, s.AckPending, by[s.Stream])
		}
	}
	return nil
}

// window is the span a last-minute count covers: RateWindow, or since the stream's first entry
// when that is younger; at least a second.
func window(now, first time.Time) float64 {
	w := RateWindow
	if !first.IsZero() && now.Sub(first) < w {
		w = now.Sub(first)
	}
	return max(w.Seconds(), 1)
}

// CountSince is the number of messages stored in s at or after t. It asks the server rather than
// reading them: an ordered consumer starting at t knows at creation how many messages it has
// pending (NumPending), and is deleted right away. This is the throughput source that needs no
// second sample, so even a single `ferry status` shows the verified rate of the last minute. The
// work queues cannot be counted this way (acked messages are gone, and a work queue allows no
// second unfiltered consumer), so their rates come from two samples (see Rates).
func CountSince(ctx context.Context, s jetstream.Stream, t time.Time) (uint64, error) {
	name := s.CachedInfo().Config.Name
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t,
		HeadersOnly: true, InactiveThreshold: 10 * time.Second, // gone soon even if the delete fails
	})
	if err != nil {
		return 0, fmt.Errorf("count %s since %s: %w", name, t.Format(time.RFC3339), err)
	}
	ci := c.CachedInfo()
	_ = s.DeleteConsumer(ctx, ci.Name)
	return ci.NumPending, nil
}

// ReadProducer reads the producer's checkpoints from the job's KV: key lists under producer.*,
// scans under scan.<digest> (the plan) and scan.<digest>.<i> (each range). A job without a KV
// bucket has no producer position.
func ReadProducer(ctx context.Context, js jetstream.JetStream, n bus.Names) (Producer, error) {
	p := Producer{Lists: []checkpoint.List{}, Scans: []Scan{}}
	kv, err := js.KeyValue(ctx, n.KV)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("kv %s: %w", n.KV, err)
	}
	w, err := kv.WatchFiltered(ctx, []string{checkpoint.ListPrefix + ".*", checkpoint.ScanPrefix + ".>", checkpoint.PassPrefix + ".*.*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return p, fmt.Errorf("kv %s: %w", n.KV, err)
	}
	defer w.Stop()
	plans := map[string]checkpoint.ScanPlan{}
	ranges := map[string]map[int]checkpoint.ScanRange{} // by scan key and pass: "<scan key>/<pass>"
	passes := map[string][]checkpoint.Pass{}            // by scan key
	for e := range w.Updates() {
		if e == nil {
			break // every stored value has been delivered
		}
		parts := strings.Split(e.Key(), ".")
		switch {
		case parts[0] == checkpoint.ListPrefix && len(parts) == 2:
			var cp checkpoint.List
			if err := json.Unmarshal(e.Value(), &cp); err != nil {
				return p, fmt.Errorf("kv %s: checkpoint %s: %w", n.KV, e.Key(), err)
			}
			p.Lists = append(p.Lists, cp)
		case parts[0] == checkpoint.ScanPrefix && len(parts) == 2:
			var plan checkpoint.ScanPlan
			if err := json.Unmarshal(e.Value(), &plan); err != nil {
				return p, fmt.Errorf("kv %s: scan plan %s: %w", n.KV, e.Key(), err)
			}
			plans[e.Key()] = plan
		case parts[0] == checkpoint.ScanPrefix:
			scan, pass, i, ok := checkpoint.ParseRangeKey(e.Key())
			if !ok {
				continue
			}
			var cp checkpoint.ScanRange
			if err := json.Unmarshal(e.Value(), &cp); err != nil {
				return p, fmt.Errorf("kv %s: scan checkpoint %s: %w", n.KV, e.Key(), err)
			}
			key := scan + "/" + strconv.Itoa(pass)
			if ranges[key] == nil {
				ranges[key] = map[int]checkpoint.ScanRange{}
			}
			ranges[key][i] = cp
		case parts[0] == checkpoint.PassPrefix:
			scan, _, ok := checkpoint.ParsePassKey(e.Key())
			if !ok {
				continue
			}
			var pr checkpoint.Pass
			if err := json.Unmarshal(e.Value(), &pr); err != nil {
				return p, fmt.Errorf("kv %s: scan pass %s: %w", n.KV, e.Key(), err)
			}
			passes[scan] = append(passes[scan], pr)
		}
	}
	sort.Slice(p.Lists, func(i, j int) bool { return p.Lists[i].Path < p.Lists[j].Path })
	for key, plan := range plans {
		p.Scans = append(p.Scans, WithPasses(key, plan, passes[key], ranges))
	}
	sort.Slice(p.Scans, func(i, j int) bool { return p.Scans[i].Table < p.Scans[j].Table })
	return p, nil
}

// WithPasses is a scan's progress in its last pass, with its pass records (sorted). ranges are
// the range checkpoints by "<scan key>/<pass>".
func WithPasses(key string, plan checkpoint.ScanPlan, passes []checkpoint.Pass, ranges map[string]map[int]checkpoint.ScanRange) Scan {
	passes = slices.Clone(passes)
	slices.SortFunc(passes, func(a, b checkpoint.Pass) int { return a.N - b.N })
	cur := 1
	if len(passes) > 0 {
		cur = passes[len(passes)-1].N
	}
	cps := ranges[key+"/"+strconv.Itoa(cur)]
	sc := ScanProgress(key, plan, cps)
	sc.Pass, sc.Passes = cur, passes
	if sc.Passes == nil {
		sc.Passes = []checkpoint.Pass{}
	}
	if last := len(passes) - 1; last >= 0 && passes[last].End.IsZero() {
		// Running (or stopped): its record holds the counts of the run that stopped last, the
		// ranges what is saved since.
		var published int64
		for _, cp := range cps {
			published += cp.Published
		}
		lp := &sc.Passes[last]
		lp.Scanned, lp.Published = max(lp.Scanned, sc.Keys), max(lp.Published, published)
	}
	return sc
}

// ScanProgress sums a scan's range checkpoints: a range covers the tokens (Start, Last] of its
// (Start, End]; a range without a checkpoint, or with one outside it, covers nothing.
func ScanProgress(key string, plan checkpoint.ScanPlan, cps map[int]checkpoint.ScanRange) Scan {
	sc := Scan{Key: key, Table: plan.Table, KeyColumn: plan.KeyColumn, Ranges: len(plan.Ranges)}
	var covered float64
	for i, r := range plan.Ranges {
		cp, ok := cps[i]
		if !ok {
			continue
		}
		sc.Keys += cp.Keys
		if cp.Done {
			sc.RangesDone++
		}
		if cp.Last > r.Start && cp.Last <= r.End {
			covered += float64(uint64(cp.Last) - uint64(r.Start))
		}
	}
	sc.Fraction = covered / float64(math.MaxUint64)
	return sc
}

// reconcile sets Unaccounted from the stages' counts and afterKeys, the dead letters of keys
// that had reached KEYS.
func (st *Status) reconcile(afterKeys uint64) {
	var published, inFlight uint64
	for _, sg := range st.Stages {
		switch sg.Stage {
		case bus.StageFetcher:
			published = sg.Published
			inFlight += sg.Messages
		case bus.StageUploader, bus.StageVerifier:
			inFlight += sg.Messages
		}
	}
	st.Unaccounted = int64(published) - int64(st.Verified.Messages+afterKeys+inFlight)
}

// ackPending is the messages delivered and not yet acked over the stages.
func (st *Status) ackPending() int64 {
	var n int64
	for _, sg := range st.Stages {
		n += int64(sg.AckPending)
	}
	return n
}
