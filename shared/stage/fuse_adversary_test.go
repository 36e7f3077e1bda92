package stage_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/stage"
)

func fuseStage(name string, lim *limit.Limiter, h func()) *stage.Service {
	return &stage.Service{Options: stage.Options{Stage: name, Limiter: lim}, Handler: func(context.Context, stage.Msg) (*stage.Output, error) {
		if h != nil {
			h()
		}
		return &stage.Output{Subject: name, Stream: "S" + name, ID: name,
			Record: bus.Record{ID: "id", Key: "k", S3Key: "k", Size: 1, MD5: make([]byte, 16)}}, nil
	}}
}

// TestAdversaryFusePanicFallsBack: a later stage that panics hands the key on like any other
// failure after the read (its own service then deals with it under its own name), instead of
// failing the KEYS message: that would read the key again and dead-letter it as the fetcher's.
func TestAdversaryFusePanicFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		panicAt  string
		wantOut  string
		wantFell string
	}{
		{"uploader panics", "b", "a", "b"},
		{"verifier panics", "c", "b", "c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mk := func(name string) *stage.Service {
				return fuseStage(name, nil, func() {
					if name == tc.panicAt {
						panic("nil map")
					}
				})
			}
			fell := ""
			h := stage.Fuse(func(st string, _ error) { fell = st }, mk("a"), mk("b"), mk("c"))
			out, err := h(context.Background(), stage.Msg{Body: []byte("k")})
			if err != nil {
				t.Fatalf("fused handler failed (the key would be read again): %v", err)
			}
			if out.Subject != tc.wantOut || fell != tc.wantFell {
				t.Errorf("output %s, fell back at %q; want %s, %q", out.Subject, fell, tc.wantOut, tc.wantFell)
			}
		})
	}
}

// TestAdversaryFuseHonoursStageLimit: the uploads of the fused path stay under the uploader's
// limit (`ferry throttle --stage uploader --concurrency`, --uploader-concurrency), live, as the uploader's
// own runner does; the verifier has none to honour here.
func TestAdversaryFuseHonoursStageLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ceiling int
		lower   int // SetCeiling before the calls (0: none)
		want    int32
	}{
		{"ceiling 1", 1, 0, 1},
		{"throttled from 8 to 2", 8, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := limit.NewLimiter(tc.ceiling, false)
			if tc.lower > 0 {
				lim.SetCeiling(tc.lower)
			}
			var now, peak atomic.Int32
			up := fuseStage("b", lim, func() {
				n := now.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(20 * time.Millisecond)
				now.Add(-1)
			})
			h := stage.Fuse(nil, fuseStage("a", nil, nil), up, fuseStage("c", nil, nil))
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					out, err := h(context.Background(), stage.Msg{Body: []byte("k")})
					if err != nil || out.Subject != "c" {
						t.Errorf("output %+v, err %v; want c's", out, err)
					}
				})
			}
			wg.Wait()
			if got := peak.Load(); got > tc.want {
				t.Errorf("%d fused uploads at once, over the uploader's limit of %d", got, tc.want)
			}
		})
	}
}

// TestAdversaryFuseShutdownPastGrace: SIGTERM while a fused upload runs longer than the grace
// period. The upload is cut, but the read is done: the key must be handed to BLOBS and its KEYS
// message acked, as the unfused fetcher's output would be, not nakked to be read again.
func TestAdversaryFuseShutdownPastGrace(t *testing.T) {
	js, n := bustest.Job(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publishKeys(t, js, n, "k")
	cons, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	fetch := &stage.Service{Options: stage.Options{Stage: bus.StageFetcher}, Handler: func(_ context.Context, in stage.Msg) (*stage.Output, error) {
		reads.Add(1)
		rec := bus.Record{ID: in.Record.ID, Key: string(in.Body), S3Key: "p/k", Size: 4, MD5: make([]byte, 16)}
		return &stage.Output{Subject: n.BlobsSubject, Stream: n.Blobs, ID: bus.MsgID("blobs", rec.ID), Record: rec, Body: []byte("blob")}, nil
	}}
	uploading := make(chan struct{})
	upload := &stage.Service{Options: stage.Options{Stage: bus.StageUploader}, Handler: func(hctx context.Context, _ stage.Msg) (*stage.Output, error) {
		close(uploading)
		<-hctx.Done() // a long multipart upload, cut when the grace period ends
		return nil, hctx.Err()
	}}
	go func() {
		<-uploading
		cancel() // SIGTERM
	}()
	if err := stage.Serve(ctx, cons, stage.Fuse(nil, fetch, upload), stage.Options{Stage: bus.StageFetcher, Names: n, JS: js,
		Workers: 1, Grace: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if got := bustest.Msgs(t, js, n.Blobs); got != 1 {
		t.Errorf("BLOBS holds %d messages after the shutdown, want the read key's 1 (it would be read again)", got)
	}
	if got := bustest.Msgs(t, js, n.Keys); got != 0 {
		t.Errorf("KEYS still holds %d messages: the read key was not acked", got)
	}
}
