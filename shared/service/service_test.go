package service

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/telemetry"
)

func newEnv(n bus.Names) *Env {
	e := &Env{Names: n, Registry: telemetry.NewRegistry(), Checks: telemetry.NewChecks()}
	e.instrument()
	return e
}

func TestReadinessAndDLQMetrics(t *testing.T) {
	js, n := bustest.Job(t)
	e := newEnv(n)
	_ = newEnv(n) // a second Env (another registry) in the same process must not panic

	res := e.Checks.Run()
	var names []string
	for _, r := range res {
		names = append(names, r.Name)
		if r.Name == "nats" && (r.Err == nil || !strings.Contains(r.Err.Error(), "not connected")) {
			t.Errorf("nats before connecting: %v", r.Err)
		}
	}
	if strings.Join(names, ",") != "cassandra,nats,s3" {
		t.Errorf("checks %v, want cassandra,nats,s3", names)
	}

	e.NC, e.JS = js.Conn(), js
	ctx := context.Background()
	for _, d := range []bus.DeadLetter{
		{Key: "a", Stage: bus.StageFetcher, Reason: bus.ReasonNotFound},
		{Key: "b", Stage: bus.StageFetcher, Reason: bus.ReasonNotFound},
		{Key: "c", Stage: bus.StageVerifier, Reason: bus.ReasonVerifyMissing},
	} {
		if err := bus.PublishDeadLetter(ctx, js, n, d); err != nil {
			t.Fatal(err)
		}
	}
	e.AddReadiness("extra", func() error { return nil })
	got := scrape(t, e.Registry)
	for k, v := range map[string]float64{
		`ferry_ready{check="nats",job="t"}`:                                    1,
		`ferry_ready{check="extra",job="t"}`:                                   1,
		`ferry_dlq_messages{job="t",reason="not_found",stage="fetcher"}`:       2,
		`ferry_dlq_messages{job="t",reason="verify_missing",stage="verifier"}`: 1,
	} {
		if got[k] != v {
			t.Errorf("%s = %g, want %g (scraped %v)", k, got[k], v, got)
		}
	}
	e.NC.Close()
	if err := e.natsReady(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("nats after close: %v", err)
	}
}

func scrape(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetType().String() != "GAUGE" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var l []string
			for _, p := range m.GetLabel() {
				l = append(l, p.GetName()+`="`+p.GetValue()+`"`)
			}
			out[mf.GetName()+"{"+strings.Join(l, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}
