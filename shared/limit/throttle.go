package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// Throttle is the live limit of one stage of a job, kept in the job's KV under ThrottleKey(stage)
// and written by `ferry throttle`. Every value is for all processes of the stage together; zero is
// no limit.
type Throttle struct {
	PerSec      float64 `json:"per_sec,omitempty"` // messages/s: Cassandra reads (fetcher), PUTs (uploader)
	BytesPerSec float64 `json:"bytes_per_sec,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"` // handlers in flight
}

// ThrottleKey is the KV key of a stage's throttle.
func ThrottleKey(stage string) string { return "settings.throttle." + stage }

// presencePrefix prefixes the heartbeat keys of a stage's live processes: live.<stage>.<id>.
func presencePrefix(stage string) string { return "live." + stage + "." }

// Liveness timings. A process heartbeats every presenceBeat; one not heard from for presenceTTL is
// no longer counted (its share goes back to the others); after presenceReap anyone deletes its key.
const (
	presenceBeat = 3 * time.Second
	presenceTTL  = 10 * time.Second
	presenceReap = time.Minute
)

// Rates cap a stage's messages/s and bytes/s; zero is unlimited. They change live (Set).
type Rates struct {
	msgs, bytes *rate.Limiter
}

// NewRates returns rates of perSec and bytesPerSec (0: unlimited).
func NewRates(perSec, bytesPerSec float64) *Rates {
	r := &Rates{msgs: rate.NewLimiter(rate.Inf, 1), bytes: rate.NewLimiter(rate.Inf, 1)}
	r.Set(perSec, bytesPerSec)
	return r
}

// Set changes the rates. The burst is a tenth of a second's worth, so a change shows within a
// second and several processes sharing a limit do not add up to large bursts.
func (r *Rates) Set(perSec, bytesPerSec float64) {
	set := func(lim *rate.Limiter, v float64) {
		if v <= 0 {
			lim.SetLimit(rate.Inf)
			return
		}
		lim.SetLimit(rate.Limit(v))
		lim.SetBurst(max(int(v/10), 1))
	}
	set(r.msgs, perSec)
	set(r.bytes, bytesPerSec)
}

// Wait waits for one message's turn (one Cassandra read, one PUT). The wait is reported to the
// runner (Waited): it is the throttle's time, not the dependency's.
func (r *Rates) Wait(ctx context.Context) error {
	if r == nil || r.msgs.Limit() == rate.Inf {
		return nil
	}
	start := time.Now()
	err := r.msgs.Wait(ctx)
	Waited(ctx, time.Since(start))
	return err
}

// WaitBytes charges n bytes, in slices no larger than the burst.
func (r *Rates) WaitBytes(ctx context.Context, n int) error {
	if r == nil || r.bytes.Limit() == rate.Inf {
		return nil
	}
	start := time.Now()
	defer func() { Waited(ctx, time.Since(start)) }()
	for n > 0 {
		c := min(n, r.bytes.Burst())
		if err := r.bytes.WaitN(ctx, c); err != nil {
			return err
		}
		n -= c
	}
	return nil
}

// Limits are what one process of a stage applies: its rates and its in-flight limiter.
type Limits struct {
	Stage   string
	Rates   *Rates
	Limiter *Limiter
	// PerSec, BytesPerSec and Concurrency are the process's own flags: used while the KV holds no
	// throttle for the stage; Concurrency also stays the ceiling (it sizes the worker pool).
	PerSec, BytesPerSec float64
	Concurrency         int
	// RateKind names the message rate in the ferry_rate_limit gauge ("reads", "uploads").
	RateKind string
}

// Share is what one of live processes applies of a stage-wide throttle t (nil: none set) when its
// own flags are own. A throttle replaces the process's rate flags (0: unlimited) and is divided
// evenly; its concurrency is divided too (rounded up, at least 1) and never exceeds the process's
// own --concurrency, which sizes its worker pool.
func Share(t *Throttle, live int, own Throttle) Throttle {
	if t == nil {
		return own
	}
	live = max(live, 1)
	s := Throttle{PerSec: t.PerSec / float64(live), BytesPerSec: t.BytesPerSec / float64(live), Concurrency: own.Concurrency}
	if t.Concurrency > 0 {
		s.Concurrency = min(own.Concurrency, max(1, int(math.Ceil(float64(t.Concurrency)/float64(live)))))
	}
	return s
}

// WatchThrottle keeps l in step with the stage's throttle in the job's KV until ctx ends.
//
// The throttle is global: it caps all processes of the stage together. Each process announces itself
// with a heartbeat key (live.<stage>.<id>, every 3 s) in the job's KV and applies throttle / number
// of live processes. We chose this over a token bucket kept in NATS (one KV compare-and-set or
// request per read, at thousands of reads/s, from every fetcher) because it costs nothing per
// message and keeps working from the last values when NATS is briefly away. The price: a process
// that idles (no backlog) still holds its share, and for up to 10 s after a process dies the others
// stay below the limit instead of at it. Changes of the throttle arrive by a KV watch and are
// applied at once; a process joining is seen at its first heartbeat.
func WatchThrottle(ctx context.Context, js jetstream.JetStream, n bus.Names, l *Limits, reg prometheus.Registerer, log *slog.Logger) error {
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		return fmt.Errorf("kv %s: %w", n.KV, err)
	}
	w, err := kv.WatchFiltered(ctx, []string{ThrottleKey(l.Stage), presencePrefix(l.Stage) + "*"})
	if err != nil {
		return fmt.Errorf("watch the %s throttle in %s: %w", l.Stage, n.KV, err)
	}
	g := limitGauges(reg)
	job := n.Job
	l.Limiter.OnChange(func(limit int) { g.concurrency.WithLabelValues(job, l.Stage).Set(float64(limit)) })
	own := Throttle{PerSec: l.PerSec, BytesPerSec: l.BytesPerSec, Concurrency: l.Concurrency}
	t := &throttleState{own: own, seen: map[string]time.Time{}}
	apply := func() {
		s, live, changed := t.share(time.Now())
		if !changed {
			return
		}
		l.Rates.Set(s.PerSec, s.BytesPerSec)
		l.Limiter.SetCeiling(s.Concurrency)
		g.rate.WithLabelValues(job, l.Stage, l.RateKind).Set(s.PerSec)
		g.rate.WithLabelValues(job, l.Stage, "bytes").Set(s.BytesPerSec)
		log.Info("throttle applied", "stage", l.Stage, "live_processes", live, "per_sec", s.PerSec,
			"bytes_per_sec", s.BytesPerSec, "concurrency", s.Concurrency)
	}
	apply()

	id := presencePrefix(l.Stage) + randomID()
	beat := func(ctx context.Context) {
		if _, err := kv.Put(ctx, id, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil && ctx.Err() == nil {
			log.Debug("presence heartbeat", "err", err)
		}
	}
	beat(ctx)
	go func() {
		defer w.Stop()
		defer func() { // leave at once rather than after the TTL: the others take over the share
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = kv.Delete(dctx, id)
		}()
		hb := time.NewTicker(presenceBeat)
		defer hb.Stop()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hb.C:
				beat(ctx)
				for _, k := range t.stale(time.Now()) {
					_ = kv.Delete(ctx, k)
				}
			case <-tick.C:
				apply()
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // initial values delivered
					apply()
					continue
				}
				if err := t.update(e, time.Now()); err != nil {
					log.Error("bad throttle setting ignored", "key", e.Key(), "err", err)
					continue
				}
				apply()
			}
		}
	}()
	return nil
}

// throttleState is a watcher's view: the stage's throttle and its live processes.
type throttleState struct {
	mu       sync.Mutex
	own      Throttle
	throttle *Throttle            // nil: none set
	seen     map[string]time.Time // heartbeat key → when last heard
	last     Throttle
	lastLive int
	applied  bool
}

func (s *throttleState) update(e jetstream.KeyValueEntry, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasPrefix(e.Key(), "live.") {
		if e.Operation() != jetstream.KeyValuePut {
			delete(s.seen, e.Key())
			return nil
		}
		// A fresh heartbeat is heard now (server and client clocks may disagree a little); an old
		// one replayed by the watch at start keeps its age.
		at := now
		if age := now.Sub(e.Created()); age > presenceTTL {
			at = now.Add(-age)
		}
		s.seen[e.Key()] = at
		return nil
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.throttle = nil
		return nil
	}
	var t Throttle
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return err
	}
	if t.PerSec < 0 || t.BytesPerSec < 0 || t.Concurrency < 0 {
		return errors.New("negative value")
	}
	s.throttle = &t
	return nil
}

// live is the number of processes heard from within presenceTTL, at least 1 (this one).
func (s *throttleState) liveLocked(now time.Time) int {
	n := 0
	for _, at := range s.seen {
		if now.Sub(at) < presenceTTL {
			n++
		}
	}
	return max(n, 1)
}

// share is the process's share now, and whether it differs from the last one returned.
func (s *throttleState) share(now time.Time) (Throttle, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := s.liveLocked(now)
	sh := Share(s.throttle, live, s.own)
	changed := !s.applied || sh != s.last || live != s.lastLive
	s.last, s.lastLive, s.applied = sh, live, true
	return sh, live, changed
}

// stale returns heartbeat keys of processes gone for presenceReap, to delete.
func (s *throttleState) stale(now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, at := range s.seen {
		if now.Sub(at) > presenceReap {
			out = append(out, k)
			delete(s.seen, k)
		}
	}
	return out
}

// LiveProcesses counts the processes of a stage heard from within the liveness window, from the
// heartbeat keys in the job's KV (for `ferry throttle` to report what a setting divides over).
func LiveProcesses(ctx context.Context, kv jetstream.KeyValue, stage string) (int, error) {
	lister, err := kv.ListKeysFiltered(ctx, presencePrefix(stage)+"*")
	if err != nil {
		return 0, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	n := 0
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err == nil && time.Since(e.Created()) < presenceTTL {
			n++
		}
	}
	return n, nil
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// gauges are the limit gauges; one set per registry, shared by the stages of `ferry run`.
type gauges struct {
	concurrency *prometheus.GaugeVec
	rate        *prometheus.GaugeVec
}

var (
	gaugesMu sync.Mutex
	gaugesBy = map[prometheus.Registerer]*gauges{}
)

func limitGauges(reg prometheus.Registerer) *gauges {
	gaugesMu.Lock()
	defer gaugesMu.Unlock()
	if g, ok := gaugesBy[reg]; ok {
		return g
	}
	g := &gauges{
		concurrency: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_concurrency_limit",
			Help: "Handlers this process lets run at once now (throttle share, adaptive limit)."}, []string{"job", "stage"}),
		rate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_rate_limit",
			Help: "Rate cap this process applies now (its share of the stage's throttle), per second; 0: none."}, []string{"job", "stage", "kind"}),
	}
	if reg != nil {
		reg.MustRegister(g.concurrency, g.rate)
	}
	gaugesBy[reg] = g
	return g
}
