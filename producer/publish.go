package producer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/service"
)

// maxKey is the longest source key the producer publishes; longer ones are dead-lettered.
const maxKey = 1024

// pubAckTimeout is how long a KEYS publish waits for its PubAck before the key is published again.
// A PubAck can be lost (a connection or stream leader lost between the store and the reply) and
// nothing else would end the wait; a PubAck of a healthy stream takes milliseconds.
const pubAckTimeout = 10 * time.Second

// keysJetStream is a JetStream context on env's connection whose async publishes time out after
// timeout, so a lost PubAck frees its slot of the connection's cap and fails its future.
func keysJetStream(env *service.Env, timeout time.Duration) (jetstream.JetStream, error) {
	js, err := jetstream.New(env.JS.Conn(), jetstream.WithPublishAsyncMaxPending(bus.MaxAsyncPending),
		jetstream.WithPublishAsyncTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("producer: jetstream: %w", err)
	}
	return js, nil
}

// sink publishes keys to KEYS and dead-letters invalid ones. Every reader of a run (key lists
// read in parallel, token ranges) shares one; each has its own window.
type sink struct {
	env  *service.Env
	cfg  Config
	js   jetstream.JetStream // KEYS publishes: env.JS's connection, with a PubAck timeout
	kv   jetstream.KeyValue
	gate *backlogGate

	ackTimeout time.Duration

	lines, published, duplicates, invalid, blank, skipped, unchanged atomic.Int64

	oldCheckpoints sync.Once // warns of checkpoints without a list identity
}

func (s *sink) stats() Stats {
	return Stats{Lines: s.lines.Load(), Published: s.published.Load(), Duplicates: s.duplicates.Load(),
		Invalid: s.invalid.Load(), Blank: s.blank.Load(), SkippedFiles: s.skipped.Load(), Unchanged: s.unchanged.Load()}
}

// key publishes key through w, or dead-letters it as invalid_key when it is not a valid source key.
func (s *sink) key(ctx context.Context, w *window, key []byte, origin string, pos position) error {
	if err := keyrules.CheckSource(key, maxKey); err != nil {
		return s.deadLetter(ctx, key, origin, err.Error())
	}
	return w.publish(ctx, key, origin, pos)
}

func (s *sink) deadLetter(ctx context.Context, key []byte, origin, cause string) error {
	h := nats.Header{}
	h.Set(bus.HdrOrigin, origin)
	if err := bus.PublishDeadLetter(ctx, s.env.JS, s.env.Names, bus.DeadLetter{
		Key: string(key), Stage: bus.StageProducer, Reason: bus.ReasonInvalidKey, Err: cause, From: h,
	}); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	s.invalid.Add(1)
	return nil
}

// position is how far a reader has got once a publish is stored: for a key list the byte offset
// after the key's line and the line number; for a scan the token up to which every key is
// published and the keys read.
type position struct{ at, n int64 }

type pending struct {
	fut jetstream.PubAckFuture
	pos position
}

// window is one reader's publishes awaiting their PubAck, oldest first. Once the oldest are
// stored, their position is safe to checkpoint: done.
type window struct {
	s    *sink
	pass int // the scan pass it publishes for; 0 for a key list
	pend []pending
	done position
}

func (w *window) publish(ctx context.Context, key []byte, origin string, pos position) error {
	if len(w.pend) >= w.s.cfg.InFlight {
		if err := w.confirm(ctx, len(w.pend)/2); err != nil {
			return err
		}
	}
	names := w.s.env.Names
	m := bus.KeyMsg(names, string(key), keyID(names.Job, string(key), w.pass), origin)
	if w.pass > 0 {
		m.Header.Set(bus.HdrPass, strconv.Itoa(w.pass))
	}
	fut, err := w.s.js.PublishMsgAsync(m, jetstream.WithMsgID(bus.MsgID("keys", m.Header.Get(bus.HdrID))))
	// The connection's outstanding publishes are capped (other windows share them): a stall is
	// backpressure, so confirm what this window has out and try again.
	for attempt := 1; errors.Is(err, jetstream.ErrTooManyStalledMsgs) && ctx.Err() == nil; attempt++ {
		if len(w.pend) > 0 {
			if err := w.drain(ctx); err != nil {
				return err
			}
		} else {
			select {
			case <-ctx.Done():
			case <-time.After(min(time.Duration(attempt)*10*time.Millisecond, time.Second)):
			}
		}
		fut, err = w.s.js.PublishMsgAsync(m, jetstream.WithMsgID(bus.MsgID("keys", m.Header.Get(bus.HdrID))))
	}
	if err != nil {
		return fmt.Errorf("producer: publish key %q (%s): %w", key, origin, err)
	}
	w.pend = append(w.pend, pending{fut: fut, pos: pos})
	return nil
}

// keyID is a KEYS message's Ferry-Id: the key's, with ".p<n>" for a scan pass after the first.
// Every stage derives its Nats-Msg-Id from it, so a later pass's message of a key (rewritten
// since) must differ from the first pass's, or a duplicate window still holding that one would
// drop it at every stage.
func keyID(job, key string, pass int) string {
	id := bus.KeyID(job, key)
	if pass >= 2 {
		id += ".p" + strconv.Itoa(pass)
	}
	return id
}

// confirm waits for the oldest n publishes, re-publishing (same Nats-Msg-Id) any that failed or
// whose PubAck did not come within the ack timeout, and advances done past them. It returns when
// ctx ends; done never passes a publish whose PubAck was not received.
func (w *window) confirm(ctx context.Context, n int) error {
	for i := 0; i < n && len(w.pend) > 0; i++ {
		pd := w.pend[0]
		var ack *jetstream.PubAck
		retried := false
		select {
		case ack = <-pd.fut.Ok():
		case err := <-pd.fut.Err():
			if ack, err = w.s.retry(ctx, pd.fut.Msg(), err); err != nil {
				return err
			}
			retried = true
		case <-ctx.Done():
			return fmt.Errorf("producer: publish key %q: %w", pd.fut.Msg().Data, ctx.Err())
		}
		// A republished key is a duplicate when its first PubAck was lost after the store: it
		// was published, once.
		if ack.Duplicate && !retried {
			w.s.duplicates.Add(1)
		} else {
			w.s.published.Add(1)
		}
		w.pend = w.pend[1:]
		w.done = pd.pos
	}
	return nil
}

func (w *window) drain(ctx context.Context) error { return w.confirm(ctx, len(w.pend)) }

// retry publishes m synchronously until it is stored; the Nats-Msg-Id makes a repeat harmless.
func (s *sink) retry(ctx context.Context, m *nats.Msg, cause error) (*jetstream.PubAck, error) {
	for attempt := 1; ; attempt++ {
		s.env.Log.Debug("publish failed, retrying", "key", string(m.Data), "attempt", attempt, "err", cause)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("producer: publish key %q: %w (last error: %v)", m.Data, ctx.Err(), cause)
		case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)):
		}
		pctx, cancel := context.WithTimeout(ctx, s.ackTimeout)
		ack, err := s.js.PublishMsg(pctx, m, jetstream.WithMsgID(m.Header.Get(nats.MsgIdHdr)))
		cancel()
		if err == nil {
			return ack, nil
		}
		cause = err
	}
}

// retrying calls op until it succeeds or ctx ends: a NATS restart or leader election must pause
// the producer, not end it (the checkpoint would fall behind and a person would have to restart it).
func (s *sink) retrying(ctx context.Context, what string, op func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := op(octx)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == 1 || attempt%10 == 0 {
			s.env.Log.Warn("producer: "+what+" failed, retrying", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("producer: %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)):
		}
	}
}

// putCheckpoint stores v under key in the job's KV, retrying through NATS outages.
func (s *sink) putCheckpoint(ctx context.Context, key string, b []byte) error {
	return s.retrying(ctx, "save checkpoint "+key, func(ctx context.Context) error {
		_, err := s.kv.Put(ctx, key, b)
		return err
	})
}

// backlogGate holds every reader back while the KEYS backlog is above the high-water mark,
// until it falls to 90% of it. One goroutine reads the backlog, however many readers there are.
type backlogGate struct {
	s    *sink
	high uint64
	held atomic.Bool
	last atomic.Int64 // unix nanoseconds of the last check
}

// wait returns when the backlog is below the mark, checking it at most once a second.
func (g *backlogGate) wait(ctx context.Context) {
	if g.due() {
		g.check(ctx)
	}
	for g.held.Load() && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
			if g.due() {
				g.check(ctx)
			}
		}
	}
}

// due says whether a second has passed since the last check, and claims the next one.
func (g *backlogGate) due() bool {
	last, now := g.last.Load(), time.Now().UnixNano()
	return now-last >= int64(time.Second) && g.last.CompareAndSwap(last, now)
}

func (g *backlogGate) check(ctx context.Context) {
	var backlog uint64
	err := g.s.retrying(ctx, "read the KEYS backlog", func(ctx context.Context) error {
		q, err := service.WorkQueue(ctx, g.s.env.JS, g.s.env.Names, g.s.env.Names.Keys)
		backlog = q.Msgs // summed over the partitions
		return err
	})
	if err != nil {
		return // ctx ended: the caller stops
	}
	switch held := g.held.Load(); {
	case !held && backlog > g.high:
		g.held.Store(true)
		g.s.env.Log.Info("KEYS backlog above high-water mark, holding back", "backlog", backlog, "high_water", g.high)
	case held && backlog <= g.high*9/10:
		g.held.Store(false)
		g.s.env.Log.Info("KEYS backlog below high-water mark, resuming", "backlog", backlog)
	}
}

// each calls fn for every item, n at a time. The first error ends the context the others run
// with, so they stop (saving their checkpoints), and is returned.
func each[T any](ctx context.Context, n int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	todo := make(chan T)
	var wg sync.WaitGroup
	for range min(n, len(items)) {
		wg.Go(func() {
			for it := range todo {
				if err := fn(ctx, it); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
feed:
	for _, it := range items {
		select {
		case todo <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(todo)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
