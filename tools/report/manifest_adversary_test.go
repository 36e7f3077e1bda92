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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/manifest/manifesttest"
)

func publishRecords(t *testing.T, js jetstream.JetStream, n bus.Names, prefix string, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		key := fmt.Sprintf("%s%04d", prefix, i)
		rec := bus.Record{ID: bus.KeyID(n.Job, key), Key: key, S3Key: key, Size: 1, MD5: make([]byte, 16)}
		m := nats.NewMsg(n.DoneSubject)
		rec.Encode(m.Header)
		m.Header.Set("Nats-Msg-Id", bus.MsgID("done", rec.ID))
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
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
