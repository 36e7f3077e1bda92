package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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
type attempts struct{ kv jetstream.KeyValue }

// recState is what the attempts bucket holds of the current run.
type recState int

const (
	recNone    recState = iota // nothing yet (a first delivery): a failure writes the run
	recWritten                 // written before the handler started
	recUnknown                 // unreadable, unwritable or no bucket: write nothing
)

func attemptsKey(md *jetstream.MsgMetadata) string {
	return md.Stream + "." + strconv.FormatUint(md.Sequence.Stream, 10)
}

func (a *attempts) get(ctx context.Context, md *jetstream.MsgMetadata) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	e, err := a.kv.Get(ctx, attemptsKey(md))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read attempts of %s: %w", attemptsKey(md), err)
	}
	n, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("attempts of %s: %w", attemptsKey(md), err)
	}
	return n, nil
}

func (a *attempts) set(ctx context.Context, md *jetstream.MsgMetadata, runs uint64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var err error
	if runs == 0 {
		err = a.kv.Delete(ctx, attemptsKey(md))
	} else {
		_, err = a.kv.Put(ctx, attemptsKey(md), []byte(strconv.FormatUint(runs, 10)))
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

// before counts the run about to start and returns its number (runs before it plus one). ok is
// false when the recorded runs already reached the budget: the last one never finished (its
// process died or stalled each time), so msg is dead-lettered without another.
func (r *runner) before(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata) (runs uint64, rec recState, ok bool) {
	if r.attempts == nil {
		return md.NumDelivered, recUnknown, true
	}
	if md.NumDelivered <= 1 {
		return 1, recNone, true
	}
	prev, err := r.attempts.get(ctx, md)
	if err != nil {
		// Unknown: run it; the server's backstop still bounds the deliveries.
		r.attemptsLog(err)
		return 1, recUnknown, true
	}
	if r.budget > 0 && prev >= r.budget {
		cause := fmt.Errorf("handler started %d times and never finished (%d deliveries): its process died or stalled each time", prev, md.NumDelivered)
		r.deadLetter(ctx, msg, md, prev, bus.ReasonMaxDeliveries, cause)
		return prev, recUnknown, false
	}
	if err := r.attempts.set(ctx, md, prev+1); err != nil {
		r.attemptsLog(err)
		return prev + 1, recUnknown, true
	}
	return prev + 1, recWritten, true
}

// record writes a failed run that before did not write (a first delivery's).
func (r *runner) record(ctx context.Context, md *jetstream.MsgMetadata, rec recState, runs uint64) {
	if rec != recNone {
		return
	}
	if err := r.attempts.set(ctx, md, runs); err != nil {
		r.attemptsLog(err)
	}
}

// uncount takes back a run that before wrote but that says nothing about the message.
func (r *runner) uncount(ctx context.Context, md *jetstream.MsgMetadata, rec recState, runs uint64) {
	if rec != recWritten {
		return
	}
	if err := r.attempts.set(ctx, md, runs-1); err != nil {
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
