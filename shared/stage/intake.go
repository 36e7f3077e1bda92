package stage

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/limit"
)

// intake is the runner's message source: one pull iterator shared by the workers (Next is safe for
// concurrent use), whose prefetch follows the limiter. A message prefetched ages against AckWait
// before any worker starts it; with the adaptive limit or `ferry throttle --concurrency` far below
// --concurrency and slow handlers, a prefetch of --concurrency would let buffered messages expire
// and come back as redeliveries, using up deliveries of keys never tried. So when the limit moves
// enough, the intake opens an iterator of the new size and drains the old one: its
// buffered messages still go to workers, and the server stops serving its pull requests once its
// inbox has no interest.
type intake struct {
	cons jetstream.Consumer
	log  *slog.Logger

	mu      sync.Mutex
	it      jetstream.MessagesContext
	retired []jetstream.MessagesContext // replaced by a resize, draining: read these first
	size    int
	closed  bool
}

func newIntake(cons jetstream.Consumer, size int, log *slog.Logger) (*intake, error) {
	f := &intake{cons: cons, log: log}
	it, err := f.open(size)
	if err != nil {
		return nil, err
	}
	f.it, f.size = it, size
	return f, nil
}

func (f *intake) open(size int) (jetstream.MessagesContext, error) {
	return f.cons.Messages(
		// Prefetch no more than the workers can start soon: prefetched messages age against AckWait.
		jetstream.PullMaxMessages(max(size, 1)),
		// Short-lived pull requests: a request the server stops serving (seen under CPU starvation
		// as 20-30 s without deliveries, the default expiry) is replaced within seconds.
		jetstream.PullExpiry(5*time.Second),
		jetstream.WithMessagesErrOnMissingHeartbeat(false),
	)
}

// next returns the next message; jetstream.ErrMsgIteratorClosed once the intake is drained (or its
// connection closed). Iterators a resize replaced are emptied first: their buffered messages are
// already delivered, and only a worker reading them hands them on before their ack wait ends.
func (f *intake) next() (jetstream.Msg, error) {
	for {
		f.mu.Lock()
		it, old := f.it, len(f.retired) > 0
		if old {
			it = f.retired[0]
		}
		f.mu.Unlock()
		msg, err := it.Next()
		if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return msg, err
		}
		f.mu.Lock()
		if old {
			f.retired = slices.DeleteFunc(f.retired, func(r jetstream.MessagesContext) bool { return r == it })
			f.mu.Unlock()
			continue
		}
		replaced := !f.closed && f.it != it
		f.mu.Unlock()
		if !replaced {
			return nil, err
		}
	}
}

// resize makes the prefetch size when that is at most half the current one, a quarter more, or
// the ceiling; otherwise it keeps the iterator (no churn on small moves). It grows sooner than it
// shrinks: a prefetch below the limit idles workers, one above it only ages messages.
func (f *intake) resize(size, ceiling int) {
	size = min(max(size, 1), ceiling)
	f.mu.Lock()
	cur := f.size
	shrink, grow := size*2 <= cur, size >= cur+max(cur/4, 1)
	if f.closed || size == cur || !(shrink || grow || size == ceiling) {
		f.mu.Unlock()
		return
	}
	it, err := f.open(size)
	if err != nil {
		f.mu.Unlock()
		f.log.Debug("resize prefetch", "from", cur, "to", size, "err", err)
		return
	}
	old := f.it
	f.it, f.size = it, size
	f.retired = append(f.retired, old)
	f.mu.Unlock()
	old.Drain()
}

// drain stops pulling for good: buffered messages are still handed out, then next reports closed.
func (f *intake) drain() {
	f.mu.Lock()
	f.closed = true
	it := f.it
	f.mu.Unlock()
	it.Drain()
}

// follow resizes the intake to the limiter's limit every interval until stop is closed.
func (f *intake) follow(l *limit.Limiter, ceiling int, interval time.Duration, stop <-chan struct{}) {
	every(interval, stop, func() { f.resize(l.Limit(), ceiling) })
}

// every calls fn each interval until stop is closed.
func every(interval time.Duration, stop <-chan struct{}, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// source is what the runner's workers take messages from: one intake, or merged intakes.
type source interface {
	next() (jetstream.Msg, error)
	drain()
	follow(l *limit.Limiter, ceiling int, interval time.Duration, stop <-chan struct{})
}

func newSource(cons []jetstream.Consumer, size int, log *slog.Logger) (source, error) {
	if len(cons) == 1 {
		return newIntake(cons[0], size, log)
	}
	return newMerged(cons, size, log)
}

// merged serves the consumers of a partitioned work queue (one per stream) to one pool of
// workers. Each intake prefetches its share of the limit, rounded up: keys are spread over the
// partitions by a hash, so their backlogs are alike, and what waits in buffers against AckWait
// stays near the limit, as with one stream: at most partitions − 1 more, and one more a pump
// holds while every worker is busy. A limit far below the partition count (`ferry throttle
// --concurrency 1` with 8 partitions) still prefetches a message or two a partition: with
// handlers slower than about AckWait ÷ partitions those can expire unstarted and run twice
// (their outputs deduplicated), so keep the concurrency at or above --partitions.
type merged struct {
	parts []*intake
	msgs  chan jetstream.Msg
	log   *slog.Logger
}

func newMerged(cons []jetstream.Consumer, size int, log *slog.Logger) (*merged, error) {
	m := &merged{msgs: make(chan jetstream.Msg), log: log}
	for _, c := range cons {
		in, err := newIntake(c, share(size, len(cons)), log)
		if err != nil {
			m.drain()
			for _, p := range m.parts { // no worker will run what they prefetched: give it back
				for {
					msg, err := p.next()
					if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						break
					}
					if err == nil {
						_ = msg.Nak()
					}
				}
			}
			return nil, err
		}
		m.parts = append(m.parts, in)
	}
	// The pumps end when their intakes are drained and emptied; the workers read msgs until it
	// is closed, so Serve, waiting for its workers, waits for the pumps too.
	var wg sync.WaitGroup
	for _, in := range m.parts {
		wg.Go(func() { m.pump(in) })
	}
	go func() {
		wg.Wait()
		close(m.msgs)
	}()
	return m, nil
}

// share is one of n intakes' part of a prefetch of size, rounded up.
func share(size, n int) int { return (max(size, 1) + n - 1) / n }

func (m *merged) pump(in *intake) {
	for {
		msg, err := in.next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			m.log.Debug("next message", "err", err)
			continue
		}
		m.msgs <- msg
	}
}

func (m *merged) next() (jetstream.Msg, error) {
	msg, ok := <-m.msgs
	if !ok {
		return nil, jetstream.ErrMsgIteratorClosed
	}
	return msg, nil
}

func (m *merged) drain() {
	for _, p := range m.parts {
		p.drain()
	}
}

func (m *merged) follow(l *limit.Limiter, ceiling int, interval time.Duration, stop <-chan struct{}) {
	every(interval, stop, func() {
		for _, p := range m.parts {
			p.resize(share(l.Limit(), len(m.parts)), share(ceiling, len(m.parts)))
		}
	})
}
