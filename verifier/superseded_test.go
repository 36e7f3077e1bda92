package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestSuperseded: a message whose bytes S3 no longer holds because newer bytes of its key
// replaced them (a later writetime, the same owner) is accounted for, not a failure: its DONE
// entry is written, marked superseded. Other bytes of an older or equal writetime, of unknown age,
// or of another key stay verify_mismatch.
func TestSuperseded(t *testing.T) {
	mine, newer := []byte("the message's bytes"), []byte("newer bytes of the key")
	object := func(owner string, wt int64) blobstore.HeadResult {
		sum := md5.Sum(newer)
		meta := map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:]), blobstore.OwnerMeta: blobstore.OwnerValue(owner)}
		if wt > 0 {
			meta[blobstore.WriteTimeMeta] = blobstore.WriteTimeValue(wt)
		}
		return blobstore.HeadResult{Key: "p/k1", Size: int64(len(newer)), ETag: hex.EncodeToString(sum[:]), Metadata: meta, WriteTime: wt}
	}
	tests := []struct {
		name       string
		head       blobstore.HeadResult
		msgWT      int64
		wantSuper  int64 // the DONE entry's Superseded; 0: not superseded
		wantReason string
	}{
		{name: "newer bytes of the key: superseded", head: object("k1", 20), msgWT: 10, wantSuper: 20},
		{name: "older bytes of the key: mismatch", head: object("k1", 5), msgWT: 10, wantReason: bus.ReasonVerifyMismatch},
		{name: "same writetime, other bytes: mismatch", head: object("k1", 10), msgWT: 10, wantReason: bus.ReasonVerifyMismatch},
		{name: "message of unknown writetime: mismatch", head: object("k1", 20), wantReason: bus.ReasonVerifyMismatch},
		{name: "object without a writetime: mismatch", head: object("k1", 0), msgWT: 10, wantReason: bus.ReasonVerifyMismatch},
		{name: "another key's newer bytes: mismatch", head: object("other", 20), msgWT: 10, wantReason: bus.ReasonVerifyMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &Verifier{Names: bus.For("t"), Store: fakeStore{head: tt.head}}
			v.Register(prometheus.NewRegistry())
			sum := md5.Sum(mine)
			rec := bus.Record{ID: "id1", Key: "k1", S3Key: "p/k1", Size: int64(len(mine)), MD5: sum[:], WriteTime: tt.msgWT}
			out, err := v.Handle(context.Background(), stage.Msg{Record: rec})
			if tt.wantReason != "" {
				if reason, _ := stage.IsPermanent(err); reason != tt.wantReason {
					t.Fatalf("Handle = %v; want dead-lettered %s", err, tt.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.Subject != v.Names.DoneSubject || out.ID != bus.MsgID("done", "id1") || out.Record.Superseded != tt.wantSuper ||
				out.Record.WriteTime != tt.msgWT || string(out.Body) != "k1" {
				t.Fatalf("DONE entry %+v; want superseded by %d", out, tt.wantSuper)
			}
			if out.Stored == nil {
				t.Fatal("no Stored hook: the superseded entry is not counted")
			}
			out.Stored(context.Background())
			var m dto.Metric
			if err := v.superseded.Write(&m); err != nil {
				t.Fatal(err)
			}
			if got := m.GetCounter().GetValue(); got != 1 {
				t.Errorf("ferry_verifier_superseded_total = %v, want 1", got)
			}
		})
	}
}
