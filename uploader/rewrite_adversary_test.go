package uploader

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestAdversarySameWriteTimeTie: two writes of one key with the same client timestamp (drivers
// stamping whole milliseconds collide; so do replays USING TIMESTAMP). Cassandra keeps the
// greater value (byte order) whichever came last, so the source holds the greater bytes. The
// uploader keeps whatever the object holds: when the smaller bytes were uploaded first, S3 keeps
// bytes the source no longer has, the verifier dead-letters the message verify_mismatch, and
// prune (same writetime: not stale) proves the cut-over.
func TestAdversarySameWriteTimeTie(t *testing.T) {
	small, great := []byte("aaaa the first write"), []byte("zzzz the same timestamp")
	js, n := bustest.Job(t)
	ctx := context.Background()
	objects, err := js.ObjectStore(ctx, n.Objects)
	if err != nil {
		t.Fatal(err)
	}
	store := &fakeStore{objects: map[string][]byte{"p/k1": small}, owners: map[string]string{"p/k1": blobstore.OwnerValue("k1")},
		wts: map[string]int64{"p/k1": 2}}
	u := &Uploader{Names: n, JS: js, Objects: objects, Store: store, PartSize: 16 << 20}
	msg := blobMsg(t, js, n, "k1", great, "", func(h nats.Header) { h.Set(bus.HdrWriteTime, strconv.Itoa(2)) })
	if err := stage.Once(ctx, js, u.Handle, msg); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if !bytes.Equal(store.objects["p/k1"], great) {
		t.Errorf("S3 holds %q; Cassandra resolves the tie at writetime 2 to %q", store.objects["p/k1"], great)
	}
}
