package stage_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestServePartitions: one pool of two workers serves the three partitions of KEYS. Every key is
// handled once and its output stored in the BLOBS partition of the same number; a shutdown with
// keys still queued ends Serve (no pump left blocked) and gives back what it had prefetched, so a
// second run finishes the rest, each key still once.
func TestServePartitions(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	s := bus.DefaultSettings()
	s.Partitions, s.MaxDeliver = 3, 3
	n, err := bus.Setup(ctx, js, bus.For("parts"), s, true)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 300
	for i := range keys {
		k := fmt.Sprintf("img/%d.jpg", i)
		if _, err := js.PublishMsg(ctx, bus.KeyMsg(n, k, bus.KeyID(n.Job, k), "test")); err != nil {
			t.Fatal(err)
		}
	}
	for _, stream := range n.Streams(n.Keys) {
		if got := bustest.Msgs(t, js, stream); got < keys/6 {
			t.Fatalf("%s holds %d of %d keys", stream, got, keys)
		}
	}
	var mu sync.Mutex
	calls := map[string]int{}
	handler := func(ctx context.Context, in stage.Msg) (*stage.Output, error) {
		mu.Lock()
		calls[string(in.Body)]++
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		rec := bus.Record{ID: in.Record.ID, Key: string(in.Body), S3Key: string(in.Body), Size: 4, MD5: make([]byte, 16)}
		stream, subject := n.Route(n.Blobs, rec.ID)
		if want, _ := n.Route(n.Keys, rec.ID); n.Base(want) != n.Keys || want[len(want)-1] != stream[len(stream)-1] {
			return nil, fmt.Errorf("key %s: KEYS partition %s, BLOBS partition %s", in.Body, want, stream)
		}
		return &stage.Output{Subject: subject, Stream: stream, ID: bus.MsgID("blobs", rec.ID), Record: rec, Body: []byte("blob")}, nil
	}
	serve := func(until func() bool) {
		t.Helper()
		cons, err := bus.Consumers(ctx, js, n, n.Keys, n.Fetcher)
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- stage.ServeAll(sctx, cons, handler, stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 2,
				Grace: 5 * time.Second})
		}()
		for deadline := time.Now().Add(20 * time.Second); !until() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("ServeAll: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("ServeAll did not return after shutdown")
		}
	}
	handled := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(calls)
	}
	serve(func() bool { return handled() >= keys/3 }) // stopped with two thirds queued
	if got := handled(); got >= keys {
		t.Fatalf("the first run handled all %d keys before its stop", got)
	}
	serve(func() bool {
		var queued uint64
		for _, stream := range n.Streams(n.Keys) {
			queued += bustest.Msgs(t, js, stream)
		}
		return queued == 0
	})
	for k, c := range calls {
		if c != 1 {
			t.Errorf("key %s handled %d times", k, c)
		}
	}
	var blobs uint64
	for _, stream := range n.Streams(n.Blobs) {
		blobs += bustest.Msgs(t, js, stream)
	}
	if len(calls) != keys || blobs != keys {
		t.Errorf("%d keys handled, %d blobs stored; want %d each", len(calls), blobs, keys)
	}
}
