package limit

import (
	"sync"
	"testing"
	"time"
)

// feed gives g n samples of latency with the limit fully in use.
func feed(g *Gradient, n int, latency time.Duration, drop bool) {
	for range n {
		g.Sample(latency, g.Limit(), drop)
	}
}

func TestGradientDirection(t *testing.T) {
	ms := time.Millisecond
	type phase struct {
		n       int
		latency time.Duration
		drop    bool
		inUse   float64 // fraction of the limit in flight; 0 means all of it
	}
	tests := []struct {
		name   string
		max    int
		warmup []phase // before the limit is recorded
		then   []phase
		want   string // "up", "down", "same"
		check  func(t *testing.T, before, after int)
	}{
		{name: "flat latency grows the limit", max: 256,
			warmup: []phase{{n: 50, latency: 10 * ms}}, then: []phase{{n: 500, latency: 10 * ms}}, want: "up"},
		{name: "small jitter within the tolerance still grows", max: 256,
			warmup: []phase{{n: 50, latency: 10 * ms}}, then: []phase{{n: 300, latency: 13 * ms}}, want: "up"},
		{name: "latency tripling shrinks the limit", max: 256,
			warmup: []phase{{n: 1000, latency: 10 * ms}}, then: []phase{{n: 100, latency: 30 * ms}}, want: "down"},
		{name: "timeouts shrink the limit", max: 256,
			warmup: []phase{{n: 1000, latency: 10 * ms}}, then: []phase{{n: 50, latency: 5 * time.Second, drop: true}}, want: "down"},
		{name: "an idle stage does not grow", max: 256,
			warmup: []phase{{n: 200, latency: 10 * ms}}, then: []phase{{n: 500, latency: 10 * ms, inUse: 0.25}}, want: "same"},
		{name: "never above max", max: 20,
			warmup: []phase{{n: 2000, latency: 10 * ms}}, then: []phase{{n: 500, latency: 10 * ms}}, want: "same",
			check: func(t *testing.T, _, after int) {
				if after != 20 {
					t.Errorf("limit %d, want the max 20", after)
				}
			}},
		{name: "never below 1", max: 64,
			warmup: []phase{{n: 100, latency: 10 * ms}}, then: []phase{{n: 500, latency: 5 * time.Second, drop: true}}, want: "down",
			check: func(t *testing.T, _, after int) {
				if after != 1 {
					t.Errorf("limit %d, want the floor 1", after)
				}
			}},
		{name: "recovers after the slow spell", max: 128,
			warmup: []phase{{n: 1000, latency: 10 * ms}, {n: 200, latency: 100 * ms}},
			then:   []phase{{n: 1000, latency: 10 * ms}}, want: "up"},
	}
	run := func(g *Gradient, ps []phase) {
		for _, p := range ps {
			for range p.n {
				inUse := g.Limit()
				if p.inUse > 0 {
					inUse = int(float64(g.Limit()) * p.inUse)
				}
				g.Sample(p.latency, inUse, p.drop)
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGradient(tt.max)
			run(g, tt.warmup)
			before := g.Limit()
			run(g, tt.then)
			after := g.Limit()
			got := "same"
			switch {
			case after > before:
				got = "up"
			case after < before:
				got = "down"
			}
			if got != tt.want {
				t.Errorf("limit %d -> %d (%s), want %s", before, after, got, tt.want)
			}
			if after < 1 || after > tt.max {
				t.Errorf("limit %d outside [1, %d]", after, tt.max)
			}
			if tt.check != nil {
				tt.check(t, before, after)
			}
		})
	}
}

func TestGradientShrinksThenRecovers(t *testing.T) {
	g := NewGradient(64)
	feed(g, 1000, 5*time.Millisecond, false)
	high := g.Limit()
	feed(g, 40, 5*time.Second, true) // the source stalls: timeouts
	low := g.Limit()
	feed(g, 2000, 5*time.Millisecond, false)
	back := g.Limit()
	if !(high == 64 && low < high/2 && back == 64) {
		t.Fatalf("limit %d -> %d under timeouts -> %d after; want 64 -> < 32 -> 64", high, low, back)
	}
}

func TestGradientSetMax(t *testing.T) {
	g := NewGradient(64)
	feed(g, 1000, time.Millisecond, false)
	g.SetMax(10)
	if g.Limit() != 10 {
		t.Fatalf("limit %d after SetMax(10)", g.Limit())
	}
	g.SetMax(64)
	feed(g, 1000, time.Millisecond, false)
	if g.Limit() != 64 {
		t.Fatalf("limit %d after the cap rose again, want 64", g.Limit())
	}
}

func TestLimiterCeilingLive(t *testing.T) {
	l := NewLimiter(4, false)
	var changes []int
	l.OnChange(func(n int) { changes = append(changes, n) })
	stop := make(chan struct{})
	var slots []Slot
	for range 4 {
		slots = append(slots, l.Acquire(stop))
	}
	got := make(chan Slot)
	go func() { got <- l.Acquire(stop) }()
	select {
	case <-got:
		t.Fatal("a fifth slot under a limit of 4")
	case <-time.After(50 * time.Millisecond):
	}
	l.SetCeiling(2) // lower while 4 are taken: nobody starts until two have finished
	l.Release(slots[0], 0, SampleNone)
	l.Release(slots[1], 0, SampleNone)
	select {
	case <-got:
		t.Fatal("a slot while 2 are taken under a limit of 2")
	case <-time.After(50 * time.Millisecond):
	}
	l.Release(slots[2], 0, SampleNone)
	select {
	case s := <-got:
		slots[2] = s
	case <-time.After(time.Second):
		t.Fatal("no slot once below the new limit")
	}
	l.SetCeiling(8)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { l.Acquire(stop) })
	}
	wg.Wait()
	if n := l.InFlight(); n != 7 {
		t.Fatalf("in flight %d, want 7", n)
	}
	close(stop)
	if s := l.Acquire(stop); s.taken {
		t.Fatal("a counted slot after stop")
	}
	if want := []int{4, 2, 8}; len(changes) != 3 || changes[0] != 4 || changes[1] != 2 || changes[2] != 8 {
		t.Fatalf("limit changes %v, want %v", changes, want)
	}
}

func TestShare(t *testing.T) {
	own := Throttle{PerSec: 100, BytesPerSec: 1000, Concurrency: 64}
	tests := []struct {
		name string
		t    *Throttle
		live int
		want Throttle
	}{
		{"no throttle: own flags", nil, 3, own},
		{"one process takes all", &Throttle{PerSec: 200, Concurrency: 10}, 1, Throttle{PerSec: 200, Concurrency: 10}},
		{"divided by live processes", &Throttle{PerSec: 200, BytesPerSec: 4000, Concurrency: 10}, 4, Throttle{PerSec: 50, BytesPerSec: 1000, Concurrency: 3}},
		{"zero rate in the throttle is unlimited, not the flag", &Throttle{Concurrency: 2}, 1, Throttle{Concurrency: 2}},
		{"concurrency at least 1", &Throttle{Concurrency: 2}, 5, Throttle{Concurrency: 1}},
		{"concurrency never above the own ceiling", &Throttle{Concurrency: 1000}, 2, Throttle{Concurrency: 64}},
		{"no live process counted yet: this one", &Throttle{PerSec: 90}, 0, Throttle{PerSec: 90, Concurrency: 64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Share(tt.t, tt.live, own); got != tt.want {
				t.Errorf("Share = %+v, want %+v", got, tt.want)
			}
		})
	}
}
