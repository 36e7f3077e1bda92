package limit

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
)

func TestRatesUnlimitedByDefault(t *testing.T) {
	r := NewRates(0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Unlimited rates never wait, so even a cancelled context passes.
	if err := r.WaitBytes(ctx, 1<<30); err != nil {
		t.Fatalf("WaitBytes: %v", err)
	}
	var none *Rates
	if err := none.Wait(ctx); err != nil {
		t.Fatalf("nil Wait: %v", err)
	}
}

// TestWatchThrottle: a throttle written to the KV reaches a running process within a second and is
// divided among the live processes of the stage.
func TestWatchThrottle(t *testing.T) {
	js, n := bustest.Job(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	l := &Limits{Stage: bus.StageFetcher, RateKind: "reads", Rates: NewRates(0, 0),
		Limiter: NewLimiter(64, false), Concurrency: 64}
	if err := WatchThrottle(ctx, js, n, l, reg, slog.Default()); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	put := func(th Throttle) {
		b, _ := json.Marshal(th)
		if _, err := kv.Put(ctx, ThrottleKey(bus.StageFetcher), b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within a second: %s (reads/s %v, ceiling %d)", what, l.Rates.msgs.Limit(), l.Limiter.Ceiling())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	put(Throttle{PerSec: 100, Concurrency: 8})
	waitFor("100 reads/s, 8 in flight", func() bool { return l.Rates.msgs.Limit() == 100 && l.Limiter.Ceiling() == 8 })
	if v := gaugeValue(t, reg, "ferry_concurrency_limit", bus.StageFetcher, ""); v != 8 {
		t.Errorf("ferry_concurrency_limit %v, want 8", v)
	}
	if v := gaugeValue(t, reg, "ferry_rate_limit", bus.StageFetcher, "reads"); v != 100 {
		t.Errorf("ferry_rate_limit{kind=reads} %v, want 100", v)
	}
	// A second fetcher announces itself: each takes half.
	if _, err := kv.Put(ctx, presencePrefix(bus.StageFetcher)+"other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFor("50 reads/s, 4 in flight with two fetchers", func() bool { return l.Rates.msgs.Limit() == 50 && l.Limiter.Ceiling() == 4 })
	put(Throttle{PerSec: 400})
	waitFor("200 reads/s each, own ceiling", func() bool { return l.Rates.msgs.Limit() == 200 && l.Limiter.Ceiling() == 64 })
	// An uploader's throttle is not the fetchers'.
	b, _ := json.Marshal(Throttle{PerSec: 1})
	if _, err := kv.Put(ctx, ThrottleKey(bus.StageUploader), b); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, ThrottleKey(bus.StageFetcher)); err != nil {
		t.Fatal(err)
	}
	waitFor("own flags after the throttle is cleared", func() bool { return l.Rates.msgs.Limit() == rate.Inf })
	if live, err := LiveProcesses(ctx, kv, bus.StageFetcher); err != nil || live != 2 {
		t.Errorf("LiveProcesses = %d, %v; want 2", live, err)
	}
}

// gaugeValue is the value of gauge name for stage (and kind, when not empty) in reg; -1 if absent.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name, stage, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if (lp.GetName() == "stage" && lp.GetValue() != stage) || (kind != "" && lp.GetName() == "kind" && lp.GetValue() != kind) {
					continue metrics
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
