//go:build integration

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/promtext"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// freeAddr is a loopback address with a port nobody listens on (for --metrics-addr).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape sums the samples of metric whose labels include match (pairs: "stage", "fetcher"). It
// returns -1 when the endpoint does not answer or has no such sample.
func scrape(addr, metric string, match ...string) float64 {
	s, err := promtext.Scrape(context.Background(), addr)
	l := promtext.Labels(match...)
	if err != nil || !s.Has(metric, l) {
		return -1
	}
	return s.Sum(metric, l)
}

// TestThrottleLive: `ferry throttle` changes the read rate of a running fetcher within seconds,
// without a restart. A fetcher works through a backlog (no uploader, so BLOBS only grows) while the
// job's throttle goes 50 → 200 reads/s; the reads counter's rate follows.
func TestThrottleLive(t *testing.T) {
	// Reads count whatever they find, so the keys need not be seeded: the ones an earlier seed run
	// wrote (PlanKeys) are found, others are not_found on both targets.
	keys := seed.PlanKeys(seedNum, seedCount(), seedFallback, seedAbsent, seedSizes)
	h := newRig(t, "", "throttle", rigOptions{plain: true})
	n := min(len(keys.Main), 4000)
	h.must("producer", "--keys", h.writeKeys("keys.txt", keys.Main[:n]))
	h.must("throttle", "--read-rate", "50")
	metrics := freeAddr(t)
	f := h.start("fetcher", "--metrics-addr", metrics, "fetcher", "--concurrency", "16")
	reads := func() float64 { return scrape(metrics, "ferry_fetcher_reads_total") }
	h.waitUntil(30*time.Second, func() string { return "fetcher reading" }, func() bool { return reads() > 0 })

	rate := func(window time.Duration) float64 {
		a, start := reads(), time.Now()
		time.Sleep(window)
		return (reads() - a) / time.Since(start).Seconds()
	}
	time.Sleep(time.Second) // past the first burst
	at50 := rate(8 * time.Second)
	if g := scrape(metrics, "ferry_rate_limit", "stage", "fetcher", "kind", "reads"); g != 50 {
		t.Errorf("ferry_rate_limit{stage=fetcher,kind=reads} = %v, want 50", g)
	}
	changed := time.Now()
	h.must("throttle", "--read-rate", "200")
	// Within a few seconds: the first 2-second window at the new rate.
	var seen time.Duration
	for time.Since(changed) < 10*time.Second {
		if r := rate(time.Second); r > 120 {
			seen = time.Since(changed)
			break
		}
	}
	at200 := rate(8 * time.Second)
	h.must("throttle", "--concurrency", "2")
	time.Sleep(1500 * time.Millisecond)
	limit := scrape(metrics, "ferry_concurrency_limit", "stage", "fetcher")
	inflight := scrape(metrics, "ferry_in_flight", "stage", "fetcher")
	t.Logf("read rate: %.1f/s at --read-rate 50, %.1f/s at 200 (new rate seen %s after the change); after --concurrency 2: limit gauge %v, in flight %v",
		at50, at200, seen.Round(100*time.Millisecond), limit, inflight)
	if at50 < 40 || at50 > 60 {
		t.Errorf("read rate %.1f/s under a 50 reads/s throttle", at50)
	}
	if at200 < 160 || at200 > 230 {
		t.Errorf("read rate %.1f/s under a 200 reads/s throttle", at200)
	}
	if seen == 0 || seen > 5*time.Second {
		t.Errorf("the new rate showed %s after the change, want within 5s", seen)
	}
	if limit != 2 || inflight > 2 {
		t.Errorf("after --concurrency 2: ferry_concurrency_limit %v, ferry_in_flight %v", limit, inflight)
	}
	if err := f.stop(time.Minute); err != nil {
		t.Errorf("fetcher exit: %v", err)
	}
}

// latencyProxy is a TCP proxy in front of one Cassandra node that delays every chunk the node sends
// by a configurable pause, one chunk after another per connection: like a node whose disks slowed
// down, the more is asked of it the longer each answer queues.
type latencyProxy struct {
	addr   string
	delay  atomic.Int64 // nanoseconds per chunk read from the node
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	target string
}

func newLatencyProxy(t *testing.T, target string) *latencyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &latencyProxy{addr: ln.Addr().String(), ln: ln, target: target}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *latencyProxy) setDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *latencyProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() {
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					if d := p.delay.Load(); d > 0 {
						time.Sleep(time.Duration(d))
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (p *latencyProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestAdaptiveUnderLatency: a fetcher with --adaptive reads dc1 through a latency proxy. When the
// proxy slows the node down, the fetcher's concurrency limit shrinks instead of queueing reads into
// timeouts; when the node is fast again the limit grows back. The same run without --adaptive is
// the comparison (FERRY_E2E_ADAPTIVE_COMPARE=1).
func TestAdaptiveUnderLatency(t *testing.T) {
	// Seeded by an earlier run (make test's e2e tests); FERRY_E2E_SEED=1 seeds first.
	keys := seed.PlanKeys(seedNum, seedCount(), seedFallback, seedAbsent, seedSizes)
	if os.Getenv("FERRY_E2E_SEED") == "1" {
		keys, _ = seeded(t)
	}
	modes := []bool{true}
	if os.Getenv("FERRY_E2E_ADAPTIVE_COMPARE") == "1" {
		modes = append(modes, false)
	}
	delay := 40 * time.Millisecond
	if d, err := time.ParseDuration(os.Getenv("FERRY_E2E_PROXY_DELAY")); err == nil {
		delay = d
	}
	for _, adaptive := range modes {
		t.Run(fmt.Sprintf("adaptive=%v", adaptive), func(t *testing.T) {
			h := newRig(t, "", "adaptive", rigOptions{plain: true})
			job, err := config.Load(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			// Only dc1, only through the proxy. gocql keeps the contact point's address and port for
			// the node it connects to (a discovered peer of another DC is dropped by local_dc), so
			// every query goes through the proxy.
			proxy := newLatencyProxy(t, "127.0.0.1:9042")
			dc1 := job.Source.Targets[0]
			dc1.Hosts = []string{proxy.addr}
			dc1.Timeout = 2 * time.Second
			job.Source.Targets = []config.Target{dc1}
			b, err := yaml.Marshal(job)
			if err != nil {
				t.Fatal(err)
			}
			h.cfg = filepath.Join(h.dir, "proxied.yaml")
			if err := os.WriteFile(h.cfg, b, 0o644); err != nil {
				t.Fatal(err)
			}
			n := min(len(keys.Main), 20000)
			h.must("producer", "--keys", h.writeKeys("keys.txt", keys.Main[:n]))
			drainBlobs(t, h) // stands in for the uploader: BLOBS never fills, the fetcher never waits on it
			metrics := freeAddr(t)
			args := []string{"--metrics-addr", metrics, "fetcher", "--concurrency", "64"}
			if adaptive {
				args = append(args, "--adaptive")
			}
			f := h.start("fetcher", args...)
			reads := func(result string) float64 {
				return max(scrape(metrics, "ferry_fetcher_reads_total", "result", result), 0)
			}
			h.waitUntil(30*time.Second, func() string { return "fetcher reading" }, func() bool { return reads("found") > 0 })

			type point struct {
				at            time.Duration
				phase         string
				limit, inUse  float64
				found, errors float64
			}
			var points []point
			start := time.Now()
			sample := func(phase string, d time.Duration) {
				end := time.Now().Add(d)
				for time.Now().Before(end) {
					points = append(points, point{at: time.Since(start), phase: phase,
						limit: scrape(metrics, "ferry_concurrency_limit", "stage", "fetcher"),
						inUse: scrape(metrics, "ferry_in_flight", "stage", "fetcher"),
						found: reads("found"), errors: reads("error")})
					time.Sleep(time.Second)
				}
			}
			sample("fast", 8*time.Second)
			proxy.setDelay(delay)
			sample("slow", 25*time.Second)
			proxy.setDelay(0)
			sample("fast again", 15*time.Second)
			if err := f.stop(time.Minute); errors.Is(err, errStopTimeout) {
				t.Error(err)
			}

			// Per phase: reads/s, timeouts (read errors), the limit at the end.
			type sum struct {
				first, last      point
				minLimit, maxLim float64
			}
			phases := map[string]*sum{}
			var order []string
			for _, p := range points {
				s := phases[p.phase]
				if s == nil {
					s = &sum{first: p, minLimit: p.limit, maxLim: p.limit}
					phases[p.phase] = s
					order = append(order, p.phase)
				}
				s.last = p
				s.minLimit, s.maxLim = min(s.minLimit, p.limit), max(s.maxLim, p.limit)
			}
			var lines []string
			for _, p := range points {
				lines = append(lines, fmt.Sprintf("%5.1fs %-10s limit %3.0f in flight %3.0f found %6.0f errors %4.0f",
					p.at.Seconds(), p.phase, p.limit, p.inUse, p.found, p.errors))
			}
			t.Logf("adaptive=%v, proxy delay %s per chunk:\n%s", adaptive, delay, strings.Join(lines, "\n"))
			for _, name := range order {
				s := phases[name]
				secs := (s.last.at - s.first.at).Seconds()
				t.Logf("%-10s %.0f reads/s, %.0f timeouts/errors, limit %v..%v (end %v)", name,
					(s.last.found-s.first.found)/max(secs, 1), s.last.errors-s.first.errors, s.minLimit, s.maxLim, s.last.limit)
			}
			if !adaptive {
				return
			}
			fast, slow, again := phases["fast"], phases["slow"], phases["fast again"]
			if fast == nil || slow == nil || again == nil {
				t.Fatal("missing phases")
			}
			if !(slow.minLimit < fast.last.limit/2) {
				t.Errorf("limit did not shrink under latency: %v before, at least %v during", fast.last.limit, slow.minLimit)
			}
			if !(again.last.limit > 2*slow.last.limit) {
				t.Errorf("limit did not recover: %v at the end of the slow phase, %v after", slow.last.limit, again.last.limit)
			}
		})
	}
}

// drainBlobs acks everything the fetcher publishes to BLOBS, with the uploader's consumer.
func drainBlobs(t *testing.T, h *rig) {
	t.Helper()
	ctx := context.Background()
	cons, err := h.js.Consumer(ctx, h.names.Blobs, h.names.Uploader)
	if err != nil {
		// Services create the streams; the producer has run, so they exist.
		t.Fatalf("uploader consumer: %v", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack() }, jetstream.PullMaxMessages(256))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}
