// Package orphan finds and requeues the messages a NATS cluster bug left behind in a work queue,
// which its consumer will never deliver (nats-server #4736, #7680: after a consumer leader change
// the ack floor can move past a message the work queue still holds). `ferry repair` does it on
// demand; every service's sweeper (Sweeper) does it once a minute.
//
// Only provably orphaned messages are touched: those at or below the consumer's ack floor (or,
// when it has nothing ack-pending, at or below the last sequence it delivered) that are still
// in the stream after a pause, less those waiting for the advisor. A message that ran out of
// deliveries and whose max-deliveries advisory was lost is one of them too: nothing else would
// ever dead-letter it. Each is requeued: a copy to the same subject first, then the original is
// deleted. The copy's Nats-Msg-Id is derived from the original's and its sequence, so two
// sweepers (or a sweep and a repair) that requeue the same orphan store one copy: the stream's
// duplicate window drops the second. A crash between the publish and the delete leaves the
// original, which the next pass requeues into the same deduplicated copy.
package orphan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// Queue is a work queue and its durable consumer.
type Queue struct {
	Stage, Stream, Consumer string
}

// Queues are the job's work queues in pipeline order: KEYS, BLOBS, UPLOADED (each partition's
// stream) and ADVISORIES.
func Queues(n bus.Names) []Queue {
	var qs []Queue
	for _, q := range []Queue{{bus.StageFetcher, n.Keys, n.Fetcher}, {bus.StageUploader, n.Blobs, n.Uploader}, {bus.StageVerifier, n.Uploaded, n.Verifier}} {
		for _, stream := range n.Streams(q.Stream) {
			qs = append(qs, Queue{q.Stage, stream, q.Consumer})
		}
	}
	return append(qs, Queue{bus.StageAdvisor, n.Advisories, n.Advisor})
}

// MaxRequeues is how many times one message is requeued as an orphan. Orphaned again after
// that (its Nats-Msg-Id carries that many "/repair-<seq>"), it is dead-lettered max_deliveries:
// a message that keeps running out of deliveries while its advisories get lost would otherwise
// go round the sweep for ever. The cluster bugs that orphan a message do not strike one message
// three times.
const MaxRequeues = 3

// DefaultSettle is Options.Settle of `ferry repair`.
const DefaultSettle = 2 * time.Second

// Options are what Requeue does.
type Options struct {
	DryRun bool
	// Settle is how long Requeue waits between reading the consumer's ack floor and looking for
	// messages at or below it. An ack moves the floor a moment before the work queue deletes the
	// message (in a cluster, a replication round later), so a message seen right away may be on
	// its way out; one still there after Settle is orphaned.
	Settle time.Duration
	// Found, if set, is called for each orphan, after it was requeued (unless DryRun).
	Found func(Orphan)
}

// Orphan is one orphaned message.
type Orphan struct {
	Seq     uint64
	Subject string
	// Key is the Ferry-Key header, or the body of a KEYS message; for an advisory, the message
	// it is about ("FERRY_photos_BLOBS #17"); empty when none of these is there.
	Key string
	// NewSeq is the sequence of its copy (0 in a dry run). A copy the dedupe window dropped,
	// because another pass had already stored it, gives that copy's sequence.
	NewSeq uint64
	// DeadLettered: requeued MaxRequeues times already, it went to the DLQ instead.
	DeadLettered bool
}

// Result is what Requeue found in one work queue.
type Result struct {
	Queue
	// NoConsumer: the durable consumer does not exist (its stage never started, or `ferry setup`
	// has not run); it will deliver every message once created, so nothing is orphaned.
	NoConsumer bool
	// Bound is the highest stream sequence the consumer will provably not deliver again (Bound);
	// Delivered says it is the last delivered one rather than the ack floor.
	Bound     uint64
	Delivered bool
	Orphaned  int // messages at or below Bound still in the stream after Settle (AwaitAdvisor not counted)
	Requeued  int
	// DeadLettered are orphans that had been requeued MaxRequeues times: dead-lettered instead.
	DeadLettered int
	// Deduped are those of Requeued whose copy another pass had already stored: the duplicate
	// window dropped this pass's publish and the copy in the stream is the earlier one.
	Deduped int
	// AwaitAdvisor are messages at or below Bound that ran out of deliveries: their
	// max-deliveries advisory waits in ADVISORIES, and the advisor will dead-letter them.
	AwaitAdvisor int
}

// Bound is the highest stream sequence a consumer will provably never deliver again: its ack
// floor, or the last sequence it delivered when it has nothing ack-pending (every delivered
// message was acked, terminated or ran out of deliveries; none waits for a redelivery). It says
// whether it is the latter. A work queue deletes what its consumer acked or terminated, so a
// message at or below it is orphaned or on its way out.
func Bound(ci *jetstream.ConsumerInfo) (uint64, bool) {
	if ci.NumAckPending == 0 && ci.Delivered.Stream > ci.AckFloor.Stream {
		return ci.Delivered.Stream, true
	}
	return ci.AckFloor.Stream, false
}

// ID is the Nats-Msg-Id of the copy of the message with id that had sequence seq:
// "<id>/repair-<seq>", or "repair-<seq>" without one. It is the same on every pass, so the
// dedupe window drops a copy another pass had already stored.
func ID(id string, seq uint64) string {
	r := "repair-" + strconv.FormatUint(seq, 10)
	if id == "" {
		return r
	}
	return id + "/" + r
}

// Requeue requeues the orphaned messages of q (only finds them with o.DryRun). It walks the
// stream from its first message up to Bound with one request per message still there, not per
// sequence: a work queue's deleted sequences are skipped by the server (next by subject).
func Requeue(ctx context.Context, js jetstream.JetStream, n bus.Names, q Queue, o Options) (Result, error) {
	r := Result{Queue: q}
	s, err := js.Stream(ctx, q.Stream)
	if err != nil {
		return r, fmt.Errorf("orphans: stream %s: %w", q.Stream, err)
	}
	c, err := s.Consumer(ctx, q.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		r.NoConsumer = true
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("orphans: consumer %s on %s: %w", q.Consumer, q.Stream, err)
	}
	r.Bound, r.Delivered = Bound(c.CachedInfo())
	si, err := s.Info(ctx)
	if err != nil {
		return r, fmt.Errorf("orphans: stream info %s: %w", q.Stream, err)
	}
	if si.State.Msgs == 0 || si.State.FirstSeq > r.Bound {
		return r, nil // nothing at or below the bound: the common case, no wait
	}
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(o.Settle):
	}
	// Read after the pause, before the walk: the advisor deletes a message before it acks its
	// advisory, so a message the walk finds has its advisory here if it ran out of deliveries.
	advised := map[uint64]bool{}
	if q.Stage != bus.StageAdvisor {
		if advised, err = advisories(ctx, js, n, q.Stream); err != nil {
			return r, err
		}
	}
	for seq := si.State.FirstSeq; seq <= r.Bound; {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		read := time.Now()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // no message at or after seq
		}
		if err != nil {
			return r, fmt.Errorf("orphans: get %s #%d or the next: %w", q.Stream, seq, err)
		}
		if raw.Sequence > r.Bound {
			break
		}
		seq = raw.Sequence + 1
		if advised[raw.Sequence] {
			r.AwaitAdvisor++
			continue
		}
		r.Orphaned++
		orphan := Orphan{Seq: raw.Sequence, Subject: raw.Subject, Key: keyOf(n, q, raw)}
		// Two passes' copies of one orphan collapse into one only inside the stream's duplicate
		// window; a pass stalled that long since its read (a paused process) leaves the orphan
		// to the next one.
		if !o.DryRun && si.Config.Duplicates > 0 && time.Since(read) > si.Config.Duplicates/2 {
			return r, fmt.Errorf("orphans: %s #%d read %s ago, more than half the duplicate window; the next pass requeues it", q.Stream, raw.Sequence, time.Since(read).Round(time.Second))
		}
		if times := requeues(raw); times >= MaxRequeues && q.Stage != bus.StageAdvisor && orphan.Key != "" {
			orphan.DeadLettered = true
			if !o.DryRun {
				if err := deadLetter(ctx, js, n, s, q, raw, orphan.Key, times); err != nil {
					return r, err
				}
				r.DeadLettered++
			}
			if o.Found != nil {
				o.Found(orphan)
			}
			continue
		}
		if !o.DryRun {
			var dup bool
			if orphan.NewSeq, dup, err = requeue(ctx, js, s, q.Stream, raw); err != nil {
				return r, err
			}
			r.Requeued++
			if dup {
				r.Deduped++
			}
		}
		if o.Found != nil {
			o.Found(orphan)
		}
	}
	return r, nil
}

// requeue publishes a copy of raw to its subject (same headers and body, a Nats-Msg-Id of its
// own) and, once the copy is stored in the same stream, deletes raw. It returns the copy's
// sequence, and whether it was stored before (the duplicate window dropped this publish).
func requeue(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, stream string, raw *jetstream.RawStreamMsg) (uint64, bool, error) {
	m := nats.NewMsg(raw.Subject)
	m.Data = raw.Data
	for k, v := range raw.Header {
		// The publisher's expectations of the stream's last message were about the original's
		// place; the copy's would fail them. Nats-Expected-Stream still holds and stays.
		if !strings.HasPrefix(k, "Nats-Expected-Last") {
			m.Header[k] = slices.Clone(v)
		}
	}
	m.Header.Set(jetstream.MsgIDHeader, ID(raw.Header.Get(jetstream.MsgIDHeader), raw.Sequence))
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return 0, false, fmt.Errorf("orphans: requeue %s #%d: %w", stream, raw.Sequence, err)
	}
	if ack.Stream != stream { // cannot happen with the job's subjects; never delete then
		return 0, false, fmt.Errorf("orphans: requeue %s #%d: the copy went to stream %s (#%d); the original is kept", stream, raw.Sequence, ack.Stream, ack.Sequence)
	}
	if err := s.DeleteMsg(ctx, raw.Sequence); err != nil && !gone(err) {
		return ack.Sequence, ack.Duplicate, fmt.Errorf("orphans: delete %s #%d after requeueing it as #%d (the next pass deletes it): %w", stream, raw.Sequence, ack.Sequence, err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// requeues is how many times raw was requeued as an orphan: each copy's Nats-Msg-Id has one
// "/repair-<seq>" more (ID).
func requeues(raw *jetstream.RawStreamMsg) int {
	id := raw.Header.Get(jetstream.MsgIDHeader)
	c := strings.Count(id, "/repair-")
	if strings.HasPrefix(id, "repair-") {
		c++
	}
	return c
}

// deadLetter stores raw in the DLQ (max_deliveries, with the reason) and then deletes it.
func deadLetter(ctx context.Context, js jetstream.JetStream, n bus.Names, s jetstream.Stream, q Queue, raw *jetstream.RawStreamMsg, key string, times int) error {
	if err := bus.PublishDeadLetter(ctx, js, n, bus.DeadLetter{
		Key: key, Stage: q.Stage, Reason: bus.ReasonMaxDeliveries, From: raw.Header,
		Err: fmt.Sprintf("orphaned again after %d requeues: %s never acknowledged it and its max-deliveries advisories were lost", times, q.Consumer),
	}); err != nil {
		return fmt.Errorf("orphans: %s #%d: %w", q.Stream, raw.Sequence, err)
	}
	if err := s.DeleteMsg(ctx, raw.Sequence); err != nil && !gone(err) {
		return fmt.Errorf("orphans: delete %s #%d after dead-lettering it (the next pass deletes it): %w", q.Stream, raw.Sequence, err)
	}
	return nil
}

// gone says a delete failed because the message was not there (any more): another pass deleted
// it between this one's read and its delete. The client reports that as
// ErrMsgDeleteUnsuccessful with the server's error only as text (err_code 10057, "no message
// found"), not as ErrMsgNotFound.
func gone(err error) bool {
	return errors.Is(err, jetstream.ErrMsgNotFound) ||
		errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) && strings.Contains(err.Error(), "no message found")
}

// advisory is the part of a max-deliveries advisory that names the message.
type advisory struct {
	Stream    string `json:"stream"`
	StreamSeq uint64 `json:"stream_seq"`
}

// advisories are the stream sequences of stream's messages whose max-deliveries advisory waits
// in the job's ADVISORIES stream.
func advisories(ctx context.Context, js jetstream.JetStream, n bus.Names, stream string) (map[uint64]bool, error) {
	s, err := js.Stream(ctx, n.Advisories)
	if err != nil {
		return nil, fmt.Errorf("orphans: stream %s: %w", n.Advisories, err)
	}
	seqs := map[uint64]bool{}
	subject := bus.AdvisoryPrefix + stream + ".*"
	for seq := uint64(1); ; {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return seqs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("orphans: get %s #%d or the next: %w", n.Advisories, seq, err)
		}
		var a advisory
		if json.Unmarshal(raw.Data, &a) == nil && a.Stream == stream {
			seqs[a.StreamSeq] = true
		}
		seq = raw.Sequence + 1
	}
}

// keyOf names what an orphan carries, for the dry run's list.
func keyOf(n bus.Names, q Queue, raw *jetstream.RawStreamMsg) string {
	if k, err := bus.Text(raw.Header, bus.HdrKey); k != "" && err == nil {
		return k
	}
	switch {
	case n.Base(q.Stream) == n.Keys: // the producer's messages carry the key as their body
		return string(raw.Data)
	case q.Stream == n.Advisories:
		var a advisory
		if json.Unmarshal(raw.Data, &a) == nil && a.Stream != "" {
			return fmt.Sprintf("%s #%d", a.Stream, a.StreamSeq)
		}
	}
	return ""
}
