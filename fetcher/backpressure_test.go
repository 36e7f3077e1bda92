package fetcher

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// sizedReader serves every key a blob of size bytes made from the key; safe for concurrent use.
type sizedReader struct {
	size  int
	reads atomic.Int64
}

func (r *sizedReader) Name() string { return "dc1" }

func (r *sizedReader) ReadBlob(_ context.Context, key string) (cass.Blob, error) {
	r.reads.Add(1)
	return cass.Blob{Data: blobOf(key, r.size)}, nil
}

func blobOf(key string, size int) []byte {
	return bytes.Repeat([]byte(key+"/"), size/(len(key)+1)+1)[:size]
}

// TestLargeBlobsBackpressure: with no uploader, a backlog of blobs above the inline limit fills
// the object store to near its cap; the fetcher must then stop reading (the source is not read
// ahead of a stopped pipeline), the object store must stay under its cap, and nothing may be
// dead-lettered. Once something drains the object store, every key arrives in BLOBS with its
// own bytes.
func TestLargeBlobsBackpressure(t *testing.T) {
	const (
		capBytes = 16 << 20
		blobSize = 1536 << 10 // above the 1 MiB inline limit
		count    = 40         // 60 MiB: almost four caps
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, n, gate := largeBlobsJob(ctx, t, capBytes)
	keys := make([]string, count)
	for i := range keys {
		keys[i] = fmt.Sprintf("large-%02d", i)
	}
	for _, k := range keys {
		m := nats.NewMsg(n.KeysSubject)
		m.Data = []byte(k)
		m.Header.Set(bus.HdrID, bus.KeyID(n.Job, k))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	objects, err := js.ObjectStore(ctx, n.Objects)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := keyrules.Compile(config.KeyRules{})
	if err != nil {
		t.Fatal(err)
	}
	reader := &sizedReader{size: blobSize}
	f := &Fetcher{Names: n, JS: js, Objects: objects, Readers: []Reader{reader}, Rules: rules,
		InlineLimit: 1 << 20, MaxSize: 256 << 20, Gate: gate}
	cons, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() {
		ran <- stage.Serve(runCtx, cons, f.Handle, stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 8,
			ExhaustedReason: bus.ReasonSourceError, OutagePause: 100 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
			KeyOf: func(in stage.Msg) string { return string(in.Body) }})
	}()
	defer func() {
		stop()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	}()

	var peak uint64
	sample := func() {
		st, err := objects.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, st.Size())
		if st.Size() > capBytes {
			t.Errorf("object store holds %d bytes, over its %d-byte cap", st.Size(), capBytes)
		}
	}
	// Hold for 5 s with nothing draining: the reads must stop well short of the backlog and stay
	// stopped (a put refused by a full store and retried by redelivery would read again).
	var atSecond2 int64
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(50 * time.Millisecond) {
		sample()
		if atSecond2 == 0 && time.Since(start) > 2*time.Second {
			atSecond2 = reader.reads.Load()
		}
	}
	held := reader.reads.Load()
	t.Logf("held 5 s without an uploader: %d reads of %d keys, object store peak %.1f of %d MiB, BLOBS %d",
		held, count, float64(peak)/(1<<20), capBytes>>20, bustest.Msgs(t, js, n.Blobs))
	if held >= count {
		t.Errorf("%d reads for %d keys while nothing drained: the fetcher did not stop reading", held, count)
	}
	if held != atSecond2 {
		t.Errorf("reads went on while the object store was full: %d after 2 s, %d after 5 s", atSecond2, held)
	}
	if d := bustest.Msgs(t, js, n.DLQ); d != 0 {
		t.Errorf("%d dead letters while the object store was full", d)
	}
	if peak < capBytes/2 {
		t.Errorf("object store peak %d bytes: the test did not fill it", peak)
	}

	// An uploader stand-in: take each BLOBS message, check its object, delete it, ack.
	got := drainLarge(ctx, t, js, n, objects, count, blobSize, sample)
	for _, k := range keys {
		if !got[k] {
			t.Errorf("%s never reached BLOBS", k)
		}
	}
	if d := bustest.Msgs(t, js, n.DLQ); d != 0 {
		t.Errorf("%d dead letters", d)
	}
	t.Logf("drained: %d keys in BLOBS, %d reads, object store peak %.1f MiB", len(got), reader.reads.Load(), float64(peak)/(1<<20))
}

// drainLarge plays the uploader: it consumes count BLOBS messages, checks each object's bytes,
// deletes the object and acks, and returns the keys seen.
func drainLarge(ctx context.Context, t *testing.T, js jetstream.JetStream, n bus.Names, objects jetstream.ObjectStore,
	count, size int, sample func()) map[string]bool {
	t.Helper()
	cons, err := js.Consumer(ctx, n.Blobs, n.Uploader)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	var mu sync.Mutex
	for len(got) < count {
		if ctx.Err() != nil {
			t.Fatalf("%d of %d keys in BLOBS before the deadline", len(got), count)
		}
		batch, err := cons.Fetch(8, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			key := m.Headers().Get(bus.HdrKey)
			r, err := objects.Get(ctx, m.Headers().Get(bus.HdrObject))
			if err != nil {
				t.Fatalf("%s: object %q: %v", key, m.Headers().Get(bus.HdrObject), err)
			}
			body, err := io.ReadAll(r)
			r.Close()
			if err != nil {
				t.Fatal(err)
			}
			sum := md5.Sum(body)
			if !bytes.Equal(body, blobOf(key, size)) || hex.EncodeToString(sum[:]) != m.Headers().Get(bus.HdrMD5) {
				t.Errorf("%s: object of %d bytes is not the key's blob", key, len(body))
			}
			if err := objects.Delete(ctx, m.Headers().Get(bus.HdrObject)); err != nil {
				t.Fatal(err)
			}
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			got[key] = true
			mu.Unlock()
			sample()
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// largeBlobsJob is a job on an embedded server whose object store is capped at capBytes, and the
// fetcher's gate over it.
func largeBlobsJob(ctx context.Context, t *testing.T, capBytes int64) (jetstream.JetStream, bus.Names, *Gate) {
	t.Helper()
	js, n := bustest.Job(t)
	if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: n.Objects,
		MaxBytes: capBytes, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	blobs, err := js.Stream(ctx, n.Blobs)
	if err != nil {
		t.Fatal(err)
	}
	objects, err := js.ObjectStore(ctx, n.Objects)
	if err != nil {
		t.Fatal(err)
	}
	return js, n, StartGate(ctx, 50*time.Millisecond, slog.New(slog.DiscardHandler),
		StreamGauge("BLOBS", blobs), ObjectsGauge("object store", objects))
}

// TestGateGauges: the gate closes when any store passes 90% of its cap and opens only when every
// store is below 70%; a store without a cap never closes it.
func TestGateGauges(t *testing.T) {
	type fill struct{ blobs, objects uint64 } // percent of a 100-byte cap
	tests := []struct {
		name  string
		steps []fill
		open  []bool // after each step
	}{
		{"both low", []fill{{10, 10}}, []bool{true}},
		{"object store full closes", []fill{{10, 95}}, []bool{false}},
		{"BLOBS full closes", []fill{{95, 10}}, []bool{false}},
		{"hysteresis", []fill{{10, 95}, {10, 80}, {10, 60}}, []bool{false, false, true}},
		{"opens only when both drained", []fill{{95, 95}, {60, 80}, {60, 60}}, []bool{false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			cur := fill{}
			gauge := func(name string, pick func(fill) uint64) Gauge {
				return Gauge{Name: name, Fill: func(context.Context) (uint64, int64, error) {
					mu.Lock()
					defer mu.Unlock()
					return pick(cur), 100, nil
				}}
			}
			uncapped := Gauge{Name: "uncapped", Fill: func(context.Context) (uint64, int64, error) { return 1 << 40, -1, nil }}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			g := StartGate(ctx, time.Millisecond, slog.New(slog.DiscardHandler),
				gauge("BLOBS", func(f fill) uint64 { return f.blobs }), gauge("object store", func(f fill) uint64 { return f.objects }), uncapped)
			for i, step := range tt.steps {
				mu.Lock()
				cur = step
				mu.Unlock()
				time.Sleep(30 * time.Millisecond)
				g.mu.Lock()
				open := g.open
				g.mu.Unlock()
				if open != tt.open[i] {
					t.Fatalf("step %d %+v: open = %v, want %v", i, step, open, tt.open[i])
				}
			}
		})
	}
}

// TestLargeBlobOverObjectsCap: a blob that would not fit even in an empty object store is
// dead-lettered too_large at once (waiting could never end); the keys beside it still go through.
func TestLargeBlobOverObjectsCap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, n, gate := largeBlobsJob(ctx, t, 16<<20)
	objects, err := js.ObjectStore(ctx, n.Objects)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := keyrules.Compile(config.KeyRules{})
	if err != nil {
		t.Fatal(err)
	}
	big, fits := blobOf("big", 16<<20), blobOf("fits", 2<<20)
	f := &Fetcher{Names: n, JS: js, Objects: objects, Rules: rules, InlineLimit: 1 << 20, MaxSize: 256 << 20, Gate: gate,
		Readers: []Reader{&fakeReader{name: "dc1", blobs: map[string][]byte{"big": big, "fits": fits}}}}
	for _, k := range []string{"big", "fits"} {
		m := nats.NewMsg(n.KeysSubject)
		m.Data = []byte(k)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() {
		ran <- stage.Serve(runCtx, cons, f.Handle, stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 1,
			Log: slog.New(slog.DiscardHandler), KeyOf: func(in stage.Msg) string { return string(in.Body) }})
	}()
	for bustest.Msgs(t, js, n.DLQ)+bustest.Msgs(t, js, n.Blobs) < 2 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	dlqs, err := js.Stream(ctx, n.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlqs.Info(ctx, jetstream.WithSubjectFilter(n.DLQSubject(bus.StageFetcher, bus.ReasonTooLarge)))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.State.Subjects) != 1 || bustest.Msgs(t, js, n.DLQ) != 1 {
		t.Errorf("DLQ %v (%d entries), want the 16 MiB blob dead-lettered too_large", info.State.Subjects, bustest.Msgs(t, js, n.DLQ))
	}
	if got := bustest.Msgs(t, js, n.Blobs); got != 1 {
		t.Errorf("BLOBS holds %d messages, want the 2 MiB blob", got)
	}
}
