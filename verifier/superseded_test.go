package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestSuperseded: a message whose bytes S3 no longer holds because newer bytes of its key
// replaced them (a later writetime, the same owner) is accounted for, not a failure: its DONE
// entry is written, marked superseded. So is one whose key S3 holds other bytes of at the same
// writetime: Cassandra keeps the greater of the two and the uploader replaces a tie only with
// greater bytes. Other bytes of an older writetime, of unknown age, or of another key stay
// verify_mismatch.
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
		{name: "same writetime, other bytes (the greater, which the source kept): superseded", head: object("k1", 10), msgWT: 10, wantSuper: 10},
		{name: "another key's bytes of the same writetime: mismatch", head: object("other", 10), msgWT: 10, wantReason: bus.ReasonVerifyMismatch},
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

// scriptedStore is one object as it changes under the verifier: steps[i] is what the i-th call
// (HEAD or GET, in the order made) finds, nil for no object; the last step stays.
type scriptedStore struct {
	steps []*version
	calls int
}

type version struct {
	body []byte
	wt   int64
	read []byte // what a GET reads (damaged at rest); nil: body
}

func (v *version) head() blobstore.HeadResult {
	sum := md5.Sum(v.body)
	return blobstore.HeadResult{Key: "p/k1", Size: int64(len(v.body)), ETag: hex.EncodeToString(sum[:]), WriteTime: v.wt,
		Metadata: map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:]), blobstore.OwnerMeta: blobstore.OwnerValue("k1"),
			blobstore.WriteTimeMeta: blobstore.WriteTimeValue(v.wt)}}
}

func (s *scriptedStore) next() *version {
	v := s.steps[min(s.calls, len(s.steps)-1)]
	s.calls++
	return v
}

func (s *scriptedStore) Head(context.Context, string) (blobstore.HeadResult, error) {
	v := s.next()
	if v == nil {
		return blobstore.HeadResult{}, blobstore.Mark(blobstore.ErrNotFound)
	}
	return v.head(), nil
}

func (s *scriptedStore) GetIfMatch(_ context.Context, key, etag string) ([]byte, error) {
	v := s.next()
	switch {
	case v == nil:
		return nil, blobstore.Mark(blobstore.ErrNotFound)
	case v.head().ETag != etag:
		return nil, blobstore.Mark(fmt.Errorf("get %s: %w", key, blobstore.ErrChanged))
	case v.read != nil:
		return v.read, nil
	}
	return v.body, nil
}

// TestDeepCheckReadsTheHeadsVersion: the deep check reads the version its HEAD judged. When a
// rewrite replaces the object between the HEAD and the GET, it HEADs again and judges that
// version (superseded, verified, or missing), never a false verify_mismatch; an object replaced
// on every round is retried later; the version the HEAD vouched for reading back other bytes is
// a mismatch.
func TestDeepCheckReadsTheHeadsVersion(t *testing.T) {
	mine := &version{body: []byte("the message's bytes"), wt: 10}
	newer := &version{body: []byte("newer bytes of the key"), wt: 11}
	again := &version{body: mine.body, wt: 12} // the same bytes written again at the source: same ETag
	other := &version{body: []byte("the message's bytes, then more"), wt: 9}
	damaged := &version{body: mine.body, wt: 10, read: []byte("the message's bytez")}
	tests := []struct {
		name       string
		steps      []*version
		wantSuper  int64
		wantReason string
		wantRetry  bool
		wantCalls  int
	}{
		{name: "unchanged: verified", steps: []*version{mine}, wantCalls: 2},
		{name: "newer bytes before the GET: superseded", steps: []*version{mine, newer}, wantSuper: 11, wantCalls: 3},
		{name: "rewritten with the same bytes before the GET: verified", steps: []*version{mine, again}, wantCalls: 2},
		{name: "deleted before the GET: missing", steps: []*version{mine, nil}, wantReason: bus.ReasonVerifyMissing, wantCalls: 3},
		{name: "replaced on every round: retried", steps: []*version{mine, other, mine, other, mine, other}, wantRetry: true, wantCalls: 6},
		{name: "older bytes before the GET: mismatch", steps: []*version{mine, other}, wantReason: bus.ReasonVerifyMismatch, wantCalls: 3},
		{name: "the HEAD's version reads back other bytes: mismatch", steps: []*version{damaged}, wantReason: bus.ReasonVerifyMismatch, wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &scriptedStore{steps: tt.steps}
			v := &Verifier{Names: bus.For("t"), Store: store, Sample: 1}
			sum := md5.Sum(mine.body)
			rec := bus.Record{ID: "id1", Key: "k1", S3Key: "p/k1", Size: int64(len(mine.body)), MD5: sum[:], WriteTime: mine.wt}
			out, err := v.Handle(context.Background(), stage.Msg{Record: rec})
			reason, permanent := stage.IsPermanent(err)
			switch {
			case tt.wantReason != "":
				if reason != tt.wantReason {
					t.Fatalf("Handle = %v; want dead-lettered %s", err, tt.wantReason)
				}
			case tt.wantRetry:
				if err == nil || permanent || stage.IsFatal(err) || stage.IsOutage(err) {
					t.Fatalf("Handle = %v; want a transient error", err)
				}
			case err != nil:
				t.Fatalf("Handle: %v", err)
			case out.Record.Superseded != tt.wantSuper:
				t.Fatalf("DONE entry superseded by %d, want %d", out.Record.Superseded, tt.wantSuper)
			}
			if store.calls != tt.wantCalls {
				t.Errorf("HEADs and GETs = %d, want %d", store.calls, tt.wantCalls)
			}
		})
	}
}
