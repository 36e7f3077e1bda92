package fetcher

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/stage"
)

// Gate holds fetchers back while BLOBS is nearly full, before they read from Cassandra: a slow S3
// must never turn into extra load on the source cluster. One poller serves every worker.
type Gate struct {
	mu   sync.Mutex
	cond *sync.Cond
	open bool
}

// StartGate polls the stream every interval until ctx ends; the gate closes above 90% of its
// byte cap and opens again below 70%.
func StartGate(ctx context.Context, s jetstream.Stream, interval time.Duration, log *slog.Logger) *Gate {
	g := &Gate{open: true}
	g.cond = sync.NewCond(&g.mu)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				g.set(true) // release waiters; they see their own ctx end
				return
			case <-t.C:
			}
			info, err := s.Info(ctx)
			if err != nil || info.Config.MaxBytes <= 0 {
				continue
			}
			used := float64(info.State.Bytes) / float64(info.Config.MaxBytes)
			g.mu.Lock()
			was := g.open
			g.mu.Unlock()
			switch {
			case was && used > 0.9:
				log.Info("BLOBS nearly full, fetchers wait", "bytes", info.State.Bytes, "max_bytes", info.Config.MaxBytes)
				g.set(false)
			case !was && used < 0.7:
				log.Info("BLOBS drained, fetchers resume", "bytes", info.State.Bytes)
				g.set(true)
			}
		}
	}()
	return g
}

func (g *Gate) set(open bool) {
	g.mu.Lock()
	g.open = open
	g.mu.Unlock()
	g.cond.Broadcast()
}

// Wait returns when the gate is open or ctx has ended. A nil gate is always open.
func (g *Gate) Wait(ctx context.Context) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		return ctx.Err()
	}
	start := time.Now()
	for !g.open && ctx.Err() == nil {
		g.cond.Wait()
	}
	stage.Waited(ctx, time.Since(start)) // backpressure, not Cassandra
	return ctx.Err()
}
