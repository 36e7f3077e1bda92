package report

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/manifest/manifesttest"
)

func publishRecords(t *testing.T, js jetstream.JetStream, n bus.Names, prefix string, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		bustest.Verified(t, js, n, fmt.Sprintf("%s%04d", prefix, i))
	}
}

func perMinute(r *Report) uint64 {
	var s uint64
	for _, b := range r.PerMinute {
		s += b.Verified
	}
	return s
}

// TestAdversaryManifestCountsAddUp: "Verified counts every DONE entry: E in segments, M still in
// DONE" must add up to Verified when the drain died between recording its state and purging DONE
// (DONE still holds entries that are in a segment).
func TestAdversaryManifestCountsAddUp(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	publishRecords(t, js, n, "a", 50)
	st := manifest.State{NextSeq: 51, Segments: 1, Entries: 50, First: time.Now().UTC(), Last: time.Now().UTC(),
		Minutes: map[int64]uint64{time.Now().UTC().Truncate(time.Minute).Unix(): 50}}
	b, _ := json.Marshal(st)
	kv, _ := js.KeyValue(ctx, n.KV)
	if _, err := kv.Create(ctx, manifest.StateKey, b); err != nil {
		t.Fatal(err)
	}
	publishRecords(t, js, n, "b", 10)
	r, err := WriteWith(ctx, js, n, t.TempDir(), time.Now(), Options{Manifests: manifesttest.New(), Prefix: "m/"})
	if err != nil {
		t.Fatal(err)
	}
	if m := r.Manifest; m.Entries+m.Lost+m.InDone != r.Verified || perMinute(r) != r.Verified {
		t.Errorf("verified %d: %d in segments + %d lost + %d in DONE; per minute %d", r.Verified, m.Entries, m.Lost, m.InDone, perMinute(r))
	}
}

// TestAdversaryReportRacesDrain: reports taken while a drain moves DONE into segments count
// every verified key once, per minute too.
func TestAdversaryReportRacesDrain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	js, n := bustest.Job(t)
	publishRecords(t, js, n, "a", 3000)
	store := manifesttest.New()
	d := &manifest.Drain{JS: js, Names: n, Store: store, Prefix: "m/", Batch: 50,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now}
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(ctx, time.Millisecond) })
	bad := 0
	for i := 0; i < 15; i++ {
		r, err := WriteWith(ctx, js, n, t.TempDir(), time.Now(), Options{Manifests: store, Prefix: "m/"})
		if err != nil {
			t.Fatal(err)
		}
		if m := r.Manifest; perMinute(r) != r.Verified || m.Entries+m.Lost+m.InDone != r.Verified {
			bad++
			t.Logf("verified %d, per minute %d, manifest %+v", r.Verified, perMinute(r), m)
		}
	}
	cancel()
	wg.Wait()
	if bad > 0 {
		t.Errorf("%d of 15 reports did not add up", bad)
	}
}

// TestAdversaryEarlyFailureReadsNoSegments: a key that is never found, dead-lettered on the first
// day of a 40-day migration, stays unresolved for good. The report must not read every segment
// written since (at 150 billion keys, the whole manifest) to learn that: the drain records which
// drained entries concern keys with a dead letter, and the report reads those records. A key
// replayed and verified later, its DONE entry long drained, is still resolved.
func TestAdversaryEarlyFailureReadsNoSegments(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	store := manifesttest.New()
	d := &manifest.Drain{JS: js, Names: n, Store: store, Prefix: "m/", Batch: 50, Log: quietLog(), Now: time.Now}
	drain := func() {
		t.Helper()
		if _, _, err := d.DrainAll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deadLetter(t, js, n, "never-found")
	deadLetter(t, js, n, "replayed")
	time.Sleep(5 * time.Millisecond)
	publishRecords(t, js, n, "a", 500)
	drain()
	bustest.Verified(t, js, n, "replayed")
	publishRecords(t, js, n, "b", 200)
	drain()

	r, err := WriteWith(ctx, js, n, t.TempDir(), time.Now(), Options{Manifests: store, Prefix: "m/"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Unresolved != 1 || len(r.UnresolvedExamples) != 1 || r.UnresolvedExamples[0] != "never-found" {
		t.Errorf("unresolved %d %v; want only never-found", r.Unresolved, r.UnresolvedExamples)
	}
	if r.Manifest.Segments < 10 || r.Manifest.Read != 0 {
		t.Errorf("%d segments, %d read to resolve the failures; want none read", r.Manifest.Segments, r.Manifest.Read)
	}
}

// TestAdversaryOlderDrainSegments: segments an older ferry drained have no resolutions beside
// them (and its drain drops ResolvedFrom from the state). The report still reads those segments
// for what is unresolved, and only those: a segment at or above ResolvedFrom has its
// resolutions.
func TestAdversaryOlderDrainSegments(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	store := manifesttest.New()
	d := &manifest.Drain{JS: js, Names: n, Store: store, Prefix: "m/", Batch: 50, Log: quietLog(), Now: time.Now}
	deadLetter(t, js, n, "replayed0000")
	time.Sleep(5 * time.Millisecond)
	publishRecords(t, js, n, "a", 120)
	publishRecords(t, js, n, "replayed", 1) // DONE sequence 121, in the segment from 101
	publishRecords(t, js, n, "b", 200)
	if _, _, err := d.DrainAll(ctx); err != nil {
		t.Fatal(err)
	}
	if store.Object(manifest.ResolvedKey("m/", n.Job, 101)) == nil {
		t.Fatalf("no resolutions beside the segment from 101")
	}
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	older := func(resolvedFrom uint64) {
		t.Helper()
		e, err := kv.Get(ctx, manifest.StateKey)
		if err != nil {
			t.Fatal(err)
		}
		var st manifest.State
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			t.Fatal(err)
		}
		st.ResolvedFrom = resolvedFrom
		b, _ := json.Marshal(st)
		if _, err := kv.Put(ctx, manifest.StateKey, b); err != nil {
			t.Fatal(err)
		}
	}
	store.Delete(manifest.ResolvedDir("m/", n.Job))
	for _, c := range []struct {
		resolvedFrom uint64
		unresolved   uint64
		read         int
	}{
		{0, 0, 3},   // all drained by an older ferry: segments from 1, 51, 101 read until resolved
		{101, 1, 2}, // resolutions from 101 on (deleted here): segments 1 and 51 only
		{151, 0, 3}, // from 151 on: 1, 51 and 101
	} {
		older(c.resolvedFrom)
		r, err := WriteWith(ctx, js, n, t.TempDir(), time.Now(), Options{Manifests: store, Prefix: "m/"})
		if err != nil {
			t.Fatal(err)
		}
		if r.Unresolved != c.unresolved || r.Manifest.Read != c.read {
			t.Errorf("resolved from %d: unresolved %d, %d segments read; want %d, %d", c.resolvedFrom, r.Unresolved, r.Manifest.Read, c.unresolved, c.read)
		}
	}
}
