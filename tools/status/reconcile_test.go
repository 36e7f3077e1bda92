package status

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// TestStatusReconciles: published in KEYS = verified + dead letters after KEYS + messages in the
// work queues; ferry status flags a difference (forged entries at any time, lost keys at rest).
func TestStatusReconciles(t *testing.T) {
	for _, tc := range []struct {
		name                            string
		published, keys, blobs, ackPend uint64
		verified, afterKeys             uint64
		want                            int64
		wantLine                        string
	}{
		{"balanced at rest", 10, 0, 0, 0, 8, 2, 0, ""},
		{"running: one key counted twice for a moment", 10, 3, 1, 1, 7, 0, -1, ""},
		{"forged DONE entries", 0, 0, 0, 0, 2, 0, -2, "no published key accounts for"},
		{"lost at rest", 10, 0, 0, 0, 7, 2, 1, "neither verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &Status{Job: "t", Stages: []Stage{
				{Stage: bus.StageFetcher, Published: tc.published, Messages: tc.keys, AckPending: int(tc.ackPend)},
				{Stage: bus.StageUploader, Messages: tc.blobs},
			}, Verified: Verified{Messages: tc.verified}}
			st.Backlog = tc.keys + tc.blobs
			st.reconcile(tc.afterKeys)
			if st.Unaccounted != tc.want {
				t.Errorf("unaccounted %d, want %d", st.Unaccounted, tc.want)
			}
			var out bytes.Buffer
			Print(&out, st)
			line := ""
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "unaccounted") {
					line = l
				}
			}
			if tc.wantLine == "" && line != "" || !strings.Contains(line, tc.wantLine) {
				t.Errorf("unaccounted line %q, want one with %q", line, tc.wantLine)
			}
		})
	}
}
