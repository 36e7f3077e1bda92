package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// attempts records handler runs of messages, in the job's attempts bucket (bus.Names.Attempts)
// keyed by stream and sequence, so a message's budget counts runs rather than deliveries. Only a
// message that is not acked at its first delivery is ever written: the happy path pays no round
// trip. A redelivery (after a failure, a stop or a crash) reads its record and writes the run it
// is about to start before the handler runs, so a run its process does not survive still counts
// and a message that kills its process every time is dead-lettered after budget+1 runs (its
// first run, on the first delivery, is not recorded). A run that ends in a Fatal error or is cut
// short by shutdown is taken back: neither is the message's fault.
//
// A record also says how its last run ended, as far as anyone knows: it failed (written with the
// nak), or nobody knows (the process died or stalled, or the run succeeded and its ack or the
// record's delete was lost). A success deletes the record before the ack. A message is
// dead-lettered without a run only after a recheck: the run granted after a last budgeted run
// whose end is unknown. A finished key is then passed on, not dead-lettered: the recheck finds its
// output (handlers are idempotent) and succeeds. Only a recheck that also succeeds without its
// delete and its ack arriving can still dead-letter a finished key.
type attempts struct{ kv jetstream.KeyValue }

// recState is what the attempts bucket holds of the current run.
type recState int

const (
	recNone    recState = iota // nothing yet (a first delivery): a failure writes the run
	recWritten                 // written before the handler started
	recUnknown                 // unreadable, unwritable or no bucket: write nothing
)

// ended is how a recorded run ended, as far as the bucket knows.
type ended int

const (
	endUnknown ended = iota // "N": started; it died, stalled, or succeeded without its delete and ack arriving
	endFailed               // "N failed": failed and nakked
	endRecheck              // "N recheck": the extra run after an unknown end at the budget; started
)

// record is a message's entry in the attempts bucket; runs 0 is no entry.
type record struct {
	runs uint64
	end  ended
}

// The record's text: "N" (the form written before runs said how they ended, read as unknown),
// "N failed" or "N recheck".
func (r record) String() string {
	switch r.end {
	case endFailed:
		return strconv.FormatUint(r.runs, 10) + " failed"
	case endRecheck:
		return strconv.FormatUint(r.runs, 10) + " recheck"
	}
	return strconv.FormatUint(r.runs, 10)
}

func parseRecord(s string) (record, error) {
	n, suffix, _ := strings.Cut(s, " ")
	runs, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return record{}, err
	}
	switch suffix {
	case "":
		return record{runs: runs}, nil
	case "failed":
		return record{runs: runs, end: endFailed}, nil
	case "recheck":
		return record{runs: runs, end: endRecheck}, nil
	}
	return record{}, fmt.Errorf("unknown state %q", suffix)
}

func attemptsKey(md *jetstream.MsgMetadata) string {
	return md.Stream + "." + strconv.FormatUint(md.Sequence.Stream, 10)
}

func (a *attempts) get(ctx context.Context, md *jetstream.MsgMetadata) (record, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	e, err := a.kv.Get(ctx, attemptsKey(md))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, nil
	}
	if err != nil {
		return record{}, fmt.Errorf("read attempts of %s: %w", attemptsKey(md), err)
	}
	rec, err := parseRecord(string(e.Value()))
	if err != nil {
		return record{}, fmt.Errorf("attempts of %s: %w", attemptsKey(md), err)
	}
	return rec, nil
}

// set writes rec; a record of no runs deletes the entry.
func (a *attempts) set(ctx context.Context, md *jetstream.MsgMetadata, rec record) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var err error
	if rec.runs == 0 {
		err = a.kv.Delete(ctx, attemptsKey(md))
	} else {
		_, err = a.kv.Put(ctx, attemptsKey(md), []byte(rec.String()))
	}
	if err != nil {
		return fmt.Errorf("record attempts of %s: %w", attemptsKey(md), err)
	}
	return nil
}

// budgetOf is the handler runs a message of the consumer gets (bus.MetaBudget); 0 for no limit.
// A consumer set up before runs were counted has MaxDeliver as its budget, and the server gives
// up at that many deliveries too, so stops and crashes still use it up until `ferry setup`.
func budgetOf(c *jetstream.ConsumerInfo, log *slog.Logger) uint64 {
	if c == nil {
		return 0
	}
	if v, ok := c.Config.Metadata[bus.MetaBudget]; ok {
		if b, err := strconv.ParseUint(v, 10, 64); err == nil && b > 0 {
			return b
		}
		log.Warn("consumer metadata: bad budget, using MaxDeliver", "consumer", c.Name, bus.MetaBudget, v)
	}
	if c.Config.MaxDeliver <= 0 {
		return 0
	}
	log.Warn("consumer counts deliveries, not handler runs: each stop or crash uses up a delivery of the messages it had prefetched; run ferry setup to count handler runs",
		"consumer", c.Name, "max_deliver", c.Config.MaxDeliver)
	return uint64(c.Config.MaxDeliver)
}

// attempt is the current run of a message as the attempts bucket knows it.
type attempt struct {
	runs uint64   // this run's number: runs before it plus one
	rec  recState // what the bucket holds of this run
	prev record   // the record before this run, which uncount restores
}

// before counts the run about to start. ok is false when msg was dead-lettered instead: its
// recheck never finished either (its process died or stalled each time).
func (r *runner) before(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) (a attempt, ok bool) {
	if r.attempts == nil {
		return attempt{runs: md.NumDelivered, rec: recUnknown}, true
	}
	if md.NumDelivered <= 1 {
		return attempt{runs: 1, rec: recNone}, true
	}
	prev, err := r.attempts.get(ctx, md)
	if err != nil {
		// Unknown: run it; the server's backstop still bounds the deliveries.
		r.attemptsLog(err)
		return attempt{runs: 1, rec: recUnknown}, true
	}
	if r.budget > 0 && prev.end == endRecheck && prev.runs >= r.budget {
		cause := fmt.Errorf("handler started %d times and never finished (%d deliveries): its process died or stalled each time", prev.runs, md.NumDelivered)
		r.deadLetter(ctx, msg, md, prev.runs, bus.ReasonMaxDeliveries, cause)
		return attempt{runs: prev.runs, rec: recUnknown}, false
	}
	next := record{runs: prev.runs + 1}
	// The budget's last run, and the one before it did not fail for sure (it died, stalled, or
	// succeeded and its ack was lost; no record on a redelivery may also be a first run that
	// died): this run is the recheck. A run that finished finds its output and passes the key on;
	// if the recheck never finishes either, the next delivery dead-letters.
	if r.budget > 0 && next.runs >= r.budget && prev.end != endFailed {
		next.end = endRecheck
	}
	if err := r.attempts.set(ctx, md, next); err != nil {
		r.attemptsLog(err)
		return attempt{runs: next.runs, rec: recUnknown, prev: prev}, true
	}
	return attempt{runs: next.runs, rec: recWritten, prev: prev}, true
}

// failed writes that the run failed, before its nak: the next delivery then knows it ended.
func (r *runner) failed(ctx context.Context, md *jetstream.MsgMetadata, a attempt) {
	if a.rec == recUnknown {
		return
	}
	if err := r.attempts.set(ctx, md, record{runs: a.runs, end: endFailed}); err != nil {
		r.attemptsLog(err)
	}
}

// succeeded deletes the record of a redelivered message whose handler succeeded, before its
// ack. Its output is durable, so if the ack is lost (or the process dies before it) the
// redelivery must run it again, not find its budget used up and dead-letter it: with no record
// it runs as on a first delivery and finds its output. Should the delete not happen (a crash
// right after the handler returned, the bucket unreachable), the record says the run's end is
// unknown, and the redelivery gets a recheck run at least. A first delivery has no record: the
// happy path stays without a round trip.
func (r *runner) succeeded(ctx context.Context, md *jetstream.MsgMetadata, a attempt) {
	if r.attempts == nil || a.rec == recNone {
		return
	}
	if err := r.attempts.set(ctx, md, record{}); err != nil {
		r.attemptsLog(err)
	}
}

// uncount takes back a run that before wrote but that says nothing about the message.
func (r *runner) uncount(ctx context.Context, md *jetstream.MsgMetadata, a attempt) {
	if a.rec != recWritten {
		return
	}
	if err := r.attempts.set(ctx, md, a.prev); err != nil {
		r.attemptsLog(err)
	}
}

// attemptsLog says the attempts bucket failed, at most every 30 seconds.
func (r *runner) attemptsLog(err error) {
	now := time.Now().UnixNano()
	last := r.lastAttemptsLog.Load()
	if now-last > int64(30*time.Second) && r.lastAttemptsLog.CompareAndSwap(last, now) {
		r.o.Log.Warn("attempts bucket unavailable: handler runs not counted; the consumer's MaxDeliver still bounds deliveries", "err", err)
	}
}
