package status

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/manifest"
)

// TestCollectAfterDrainCrash: a drain that recorded its state and died before purging DONE
// leaves entries both in a segment and in DONE. "N drained, M still in DONE" must still add up
// to the verified count, not count those entries twice.
func TestCollectAfterDrainCrash(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	for i := range 60 {
		bustest.Verified(t, js, n, fmt.Sprintf("k%03d", i))
	}
	now := time.Now().UTC()
	b, _ := json.Marshal(manifest.State{NextSeq: 51, Segments: 1, Entries: 50, ResolvedFrom: 1, First: now, Last: now})
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, manifest.StateKey, b); err != nil {
		t.Fatal(err)
	}
	st, err := Collect(ctx, js, n, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if v := st.Verified; v.Messages != 60 || v.Drained != 50 || v.Drained+v.Lost+v.InStream != v.Messages {
		t.Errorf("verified %d: %d drained + %d lost + %d still in DONE; want 60 = 50 + 0 + 10", v.Messages, v.Drained, v.Lost, v.InStream)
	}
}
