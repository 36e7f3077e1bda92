package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/manifest"
)

// memStore is a bucket in memory with create-if-absent.
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func (m *memStore) Bucket() string { return "mem" }

func (m *memStore) Put(_ context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[in.Key]; ok && in.IfAbsent {
		return blobstore.PutResult{}, blobstore.ErrExists
	}
	m.objs[in.Key] = bytes.Clone(in.Body)
	return blobstore.PutResult{}, nil
}

func (m *memStore) Get(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return nil, blobstore.ErrNotFound
	}
	return b, nil
}

func (m *memStore) ListObjects(_ context.Context, prefix, after, upTo string, fn func(blobstore.Object) error) error {
	m.mu.Lock()
	var keys []string
	for k := range m.objs {
		if strings.HasPrefix(k, prefix) && k > after && (upTo == "" || k <= upTo) {
			keys = append(keys, k)
		}
	}
	m.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(blobstore.Object{Key: k, LastModified: time.Now()}); err != nil {
			return err
		}
	}
	return nil
}

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
	r, err := WriteWith(ctx, js, n, t.TempDir(), time.Now(), Options{Manifests: &memStore{objs: map[string][]byte{}}, Prefix: "m/"})
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
	store := &memStore{objs: map[string][]byte{}}
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
