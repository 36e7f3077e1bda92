package fetcher

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/limit"
)

// Gate holds fetchers back while BLOBS or the object store of large blobs is nearly full, before
// they read from Cassandra: a slow S3 must never turn into extra load on the source cluster, and
// every blob read goes into one of the two. One poller serves every worker.
type Gate struct {
	mu   sync.Mutex
	cond *sync.Cond
	open bool
}

// Gauge says how full one store is: the bytes it holds and its byte cap (≤ 0: no cap).
type Gauge struct {
	Name string // in log lines
	Fill func(ctx context.Context) (bytes uint64, maxBytes int64, err error)
}

// StreamGauge measures a stream.
func StreamGauge(name string, s jetstream.Stream) Gauge {
	return Gauge{Name: name, Fill: func(ctx context.Context) (uint64, int64, error) {
		info, err := s.Info(ctx)
		if err != nil {
			return 0, 0, err
		}
		return info.State.Bytes, info.Config.MaxBytes, nil
	}}
}

// ObjectsGauge measures an object store: the stream beneath it, chunks and metadata together.
func ObjectsGauge(name string, o jetstream.ObjectStore) Gauge {
	return Gauge{Name: name, Fill: func(ctx context.Context) (uint64, int64, error) {
		st, err := o.Status(ctx)
		if err != nil {
			return 0, 0, err
		}
		b, ok := st.(*jetstream.ObjectBucketStatus)
		if !ok {
			return 0, 0, fmt.Errorf("object store %s: status of type %T has no stream info", name, st)
		}
		info := b.StreamInfo()
		return info.State.Bytes, info.Config.MaxBytes, nil
	}}
}

// StartGate polls every gauge every interval until ctx ends. The gate closes when any store is
// above 90% of its byte cap and opens again when every store is below 70%. A gauge that cannot
// be read keeps its last reading.
func StartGate(ctx context.Context, interval time.Duration, log *slog.Logger, gauges ...Gauge) *Gate {
	g := &Gate{open: true}
	g.cond = sync.NewCond(&g.mu)
	type reading struct {
		bytes    uint64
		maxBytes int64
		used     float64
	}
	last := make([]reading, len(gauges))
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
			fullest := 0
			for i, gauge := range gauges {
				if b, maxBytes, err := gauge.Fill(ctx); err == nil {
					last[i] = reading{bytes: b, maxBytes: maxBytes}
					if maxBytes > 0 {
						last[i].used = float64(b) / float64(maxBytes)
					}
				}
				if last[i].used > last[fullest].used {
					fullest = i
				}
			}
			if len(gauges) == 0 {
				continue
			}
			top := last[fullest]
			g.mu.Lock()
			was := g.open
			g.mu.Unlock()
			switch {
			case was && top.used > 0.9:
				log.Info(gauges[fullest].Name+" nearly full, fetchers wait", "bytes", top.bytes, "max_bytes", top.maxBytes)
				g.set(false)
			case !was && top.used < 0.7:
				log.Info(gauges[fullest].Name+" drained, fetchers resume", "bytes", top.bytes)
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
	limit.Waited(ctx, time.Since(start)) // backpressure, not Cassandra
	return ctx.Err()
}
