package prune

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
)

// TestJobState: the stale floor is the earliest pass-1 start of the scanned tables (0 without a
// pass record); quarantine prefixes are remembered; PRUNED is created on a job made without it
// and its records read back in order.
func TestJobState(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	a := config.Target{Table: "ks.a", KeyColumn: "key"}
	b := config.Target{Table: "ks.b", KeyColumn: "key"}
	if f, err := firstPassStart(ctx, kv, []config.Target{a, b}); err != nil || f != 0 {
		t.Errorf("floor without passes = %d, %v; want 0", f, err)
	}
	t1 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range []struct {
		t     config.Target
		n     int
		start time.Time
	}{{a, 1, t1.Add(time.Hour)}, {a, 2, t1.Add(-time.Hour)}, {b, 1, t1}} {
		v, _ := json.Marshal(checkpoint.Pass{N: p.n, Table: p.t.Table, Start: p.start})
		if _, err := kv.Put(ctx, checkpoint.PassKey(p.t, p.n), v); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := firstPassStart(ctx, kv, []config.Target{a, b}); err != nil || f != t1.UnixMicro() {
		t.Errorf("floor = %d, %v; want %d (b's pass 1, earlier than a's; pass 2 does not count)", f, err, t1.UnixMicro())
	}
	if m, err := largestMargin(ctx, kv, []config.Target{a, b}); err != nil || m != 0 {
		t.Errorf("margin without margins = %s, %v; want 0", m, err)
	}
	for _, p := range []struct {
		t      config.Target
		n      int
		margin string
	}{{a, 3, "2m0s"}, {b, 2, "15m0s"}, {a, 5, "1h0m0s"}} { // a's pass 5 follows a gap: not read
		v, _ := json.Marshal(checkpoint.Pass{N: p.n, Table: p.t.Table, Start: t1, Margin: p.margin})
		if _, err := kv.Put(ctx, checkpoint.PassKey(p.t, p.n), v); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := largestMargin(ctx, kv, []config.Target{a, b}); err != nil || m != 15*time.Minute {
		t.Errorf("margin = %s, %v; want 15m (b's pass 2)", m, err)
	}

	for _, p := range []string{"q1/", "q1/", "q2/"} {
		known, err := quarantines(ctx, kv)
		if err != nil {
			t.Fatal(err)
		}
		if err := addQuarantine(ctx, kv, known, p); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := quarantines(ctx, kv); err != nil || !slices.Equal(got, []string{"q1/", "q2/"}) {
		t.Errorf("quarantines = %q, %v", got, err)
	}

	if err := js.DeleteStream(ctx, n.Pruned); err != nil && !errorsIsNotFound(err) {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := bus.EnsurePruned(ctx, js, n, 1); err != nil {
			t.Fatal(err)
		}
	}
	rec := natsRecorder{js: js, n: n}
	want := []Record{{Object: "o1", Key: "k1", Action: "deleted", Run: "r"}, {Object: "o2", Action: "quarantined:q/o2", Run: "r"}}
	for _, r := range append(want, want[0]) { // a repeated record is stored once
		if err := rec.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var got []Record
	if err := ReadPruned(ctx, js, n, func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, func(x, y Record) bool { return x.Object == y.Object && x.Key == y.Key && x.Action == y.Action }) {
		t.Errorf("records %+v, want %+v", got, want)
	}
}

func errorsIsNotFound(err error) bool { return errors.Is(err, jetstream.ErrStreamNotFound) }
