package producer

import (
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
)

// TestAdversarySinceLastOverAHole: pass 1 (full) never finished; --restart --since <time> ran a
// delta pass 2 to its end. Pass 2 is "complete", so --since last (or --since 2) chains from it,
// though the keys written before its floor in the ranges pass 1 never read were never published
// by any pass. A delta pass should only stand as a base when its own floor rests on a complete
// pass (or the operator says so).
func TestAdversarySinceLastOverAHole(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	open1 := checkpoint.Pass{N: 1, Table: "ks.t", Consistency: "LOCAL_ONE", Start: t0}
	at := t0.Add(time.Hour)
	delta2 := checkpoint.Pass{N: 2, Table: "ks.t", Consistency: "LOCAL_ONE", Start: t0.Add(2 * time.Hour),
		Since: at.Add(-10 * time.Minute).UnixMicro(), SinceFrom: at.Format(time.RFC3339Nano), Margin: "10m0s",
		End: t0.Add(3 * time.Hour), Complete: true}
	for _, s := range []since{{last: true}, {pass: 2}} {
		c, err := choosePass([]checkpoint.Pass{open1, delta2}, s, 10*time.Minute, false, "ks.t", "LOCAL_ONE", "", t0.Add(48*time.Hour))
		if err == nil {
			t.Errorf("since %+v: pass %d since %s accepted; pass 1 never finished, so no pass covers the keys written before %s in its unread ranges",
				s, c.Pass.N, c.Pass.SinceFrom, at.Add(-10*time.Minute))
		}
	}
}
