package stage_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestRunStoresOutput: the runner, not the handler, stores the output: in the stream the output
// names, with the record's headers (a key with blanks at its ends included) and its Nats-Msg-Id;
// the Stored hook runs once the output is stored, and only then is the input acked. An output the
// stream refuses is never acked: the input is retried and, out of runs, dead-lettered.
func TestRunStoresOutput(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stream     func(bus.Names) string
		wantStored int32
		wantBlobs  uint64
		wantDead   uint64
	}{
		{"stored, then acked", func(n bus.Names) string { return n.Blobs }, 1, 1, 0},
		{"refused by its stream: never acked", func(n bus.Names) string { return n.Uploaded }, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			publishKeys(t, js, n, " k ")
			cons, err := js.Consumer(ctx, n.Keys, n.Fetcher)
			if err != nil {
				t.Fatal(err)
			}
			var stored atomic.Int32
			h := func(_ context.Context, in stage.Msg) (*stage.Output, error) {
				rec := bus.Record{ID: in.Record.ID, Key: string(in.Body), S3Key: "p/" + string(in.Body), Size: 4, MD5: make([]byte, 16)}
				return &stage.Output{Subject: n.BlobsSubject, Stream: tc.stream(n), ID: bus.MsgID("blobs", rec.ID), Record: rec, Body: []byte("blob"),
					Stored: func(context.Context) { stored.Add(1) }}, nil
			}
			go func() {
				for ctx.Err() == nil {
					// The ack floor, not NumPending alone: the server may answer 0 pending before
					// the consumer has counted a message it just stored.
					if ci, err := cons.Info(ctx); err == nil && ci.AckFloor.Stream >= 1 && ci.NumPending == 0 && ci.NumAckPending == 0 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				cancel()
			}()
			if err := stage.Serve(ctx, cons, h, stage.Options{Stage: bus.StageFetcher, Names: n, JS: js, Workers: 2,
				Backoff: func(uint64) time.Duration { return 10 * time.Millisecond }}); err != nil {
				t.Fatal(err)
			}
			if got := stored.Load(); got != tc.wantStored {
				t.Errorf("Stored ran %d times, want %d", got, tc.wantStored)
			}
			if got := bustest.Msgs(t, js, n.Blobs); got != tc.wantBlobs {
				t.Fatalf("BLOBS holds %d messages, want %d", got, tc.wantBlobs)
			}
			if got := dlqCount(t, js, n, bus.StageFetcher, bus.ReasonMaxDeliveries); got != tc.wantDead {
				t.Errorf("%d dead letters, want %d", got, tc.wantDead)
			}
			if tc.wantBlobs == 0 {
				return
			}
			s, err := js.Stream(context.Background(), n.Blobs)
			if err != nil {
				t.Fatal(err)
			}
			m, err := s.GetMsg(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := bus.DecodeRecord(m.Header)
			if err != nil || rec.Key != " k " || rec.S3Key != "p/ k " || rec.Size != 4 || string(m.Data) != "blob" {
				t.Errorf("stored %+v %q (%v)", rec, m.Data, err)
			}
			if got, want := m.Header.Get("Nats-Msg-Id"), bus.MsgID("blobs", bus.KeyID(n.Job, " k ")); got != want {
				t.Errorf("Nats-Msg-Id %q, want %q", got, want)
			}
		})
	}
}
