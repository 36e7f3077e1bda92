package stage_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
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
// limit (`ferry throttle --stage uploader --concurrency`, --uploaders), live, as the uploader's
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
