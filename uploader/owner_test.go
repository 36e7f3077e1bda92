package uploader

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"hash/crc32"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// keyedBlobMsg publishes a BLOBS message exactly as the fetcher builds it (Ferry-Key = the source
// key, Ferry-S3-Key = its S3 key) and returns it as the uploader's consumer delivers it.
func keyedBlobMsg(t *testing.T, js jetstream.JetStream, n bus.Names, key, s3Key string, body []byte) jetstream.Msg {
	t.Helper()
	m := nats.NewMsg(n.BlobsSubject)
	sum := md5.Sum(body)
	m.Header.Set(bus.HdrID, bus.KeyID(n.Job, key))
	bus.SetText(m.Header, bus.HdrKey, key)
	bus.SetText(m.Header, bus.HdrS3Key, s3Key)
	m.Header.Set(bus.HdrSize, strconv.Itoa(len(body)))
	m.Header.Set(bus.HdrMD5, hex.EncodeToString(sum[:]))
	m.Header.Set(bus.HdrCRC32C, strconv.FormatUint(uint64(crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli))), 10))
	m.Data = body
	return delivered(t, js, n, m)
}

// TestBlankKeysNotMerged: a source key with a leading space (valid for keyrules.Map,
// published untrimmed by a token scan) and its S3 key (default template {key}) travel in NATS
// headers, and nats.go's header parser drops the leading blanks of every value. The uploader then
// PUTs " x"'s bytes to S3 key "x", with owner "x": the source key "x" (other bytes) is then taken
// for "the same key with new bytes" and overwrites it unconditionally. Two keys merged into one
// object, one of them silently overwritten, S3 key " x" never written.
func TestBlankKeysNotMerged(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := &fakeStore{objects: map[string][]byte{}, owners: map[string]string{}}
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}

	spaced, plain := []byte("bytes of ' x'"), []byte("bytes of 'x', other")
	if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, " x", " x", spaced)); err != nil {
		t.Fatalf("Handle(' x'): %v", err)
	}
	err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "x", "x", plain))
	if _, ok := store.objects[" x"]; !ok {
		t.Errorf("S3 key %q never written; objects: %q", " x", keysOf(store.objects))
	}
	if got := store.objects["x"]; bytes.Equal(got, plain) && store.puts == 3 {
		t.Errorf("S3 key \"x\" first received ' x''s bytes, then was overwritten unconditionally by 'x' (%d PUTs, Handle('x') = %v): ' x' is verified against an object that no longer holds its bytes", store.puts, err)
	}
}

func keysOf(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// trimmingStore is the fakeStore as the real client reads metadata back: aws-sdk-go-v2's HeadObject
// deserializer does strings.TrimSpace on every x-amz-meta-* value.
type trimmingStore struct{ *fakeStore }

func (s trimmingStore) headRaw(ctx context.Context, key string) (blobstore.HeadResult, error) {
	h, err := s.fakeStore.Head(ctx, key)
	for k, v := range h.Metadata {
		h.Metadata[k] = strings.TrimSpace(v)
	}
	return h, err
}

// TestAdversaryTrailingSpaceOwner: metaValue stores "x " as it is (printable ASCII), the SDK reads
// it back as "x". Two source keys "x " and "x" that the rules map to one S3 key (a rewrite that
// trims, say) then share an owner, and the second overwrites the first's object.
func TestTrailingBlankOwner(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	fs := &fakeStore{objects: map[string][]byte{}, owners: map[string]string{}}
	u := &Uploader{Names: n, JS: js, Store: trimmingStore{fs}, PartSize: 16 << 20}
	first, second := []byte("bytes of 'x '"), []byte("bytes of 'x', other")
	if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "x ", "p/x", first)); err != nil {
		t.Fatal(err)
	}
	err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "x", "p/x", second))
	if _, permanent := stage.IsPermanent(err); !permanent {
		t.Errorf("second source key on the same S3 key: Handle = %v, S3 now holds %q (%d PUTs); want a dead letter, the first key's object kept", err, fs.objects["p/x"], fs.puts)
	}
}

// TestTrailingBlankOwnSourceChanged: the same key "x " whose source bytes changed is
// taken for another key's object (owner read back "x" != "x ") and dead-lettered.
func TestTrailingBlankOwnSourceChanged(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	fs := &fakeStore{objects: map[string][]byte{"p/x": []byte("old")}, owners: map[string]string{"p/x": blobstore.OwnerValue("x ")}}
	u := &Uploader{Names: n, JS: js, Store: trimmingStore{fs}, PartSize: 16 << 20}
	if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "x ", "p/x", []byte("new bytes"))); err != nil {
		t.Errorf("own object with new source bytes: Handle = %v; want overwritten like any other key", err)
	}
}

// notFoundAfterExists refuses the conditional PUT (an object is there) and then answers the HEAD
// with 404: the object was deleted in between (a lifecycle rule, an operator, the other writer's
// multipart aborted).
type notFoundAfterExists struct{ fakeStore }

func (s *notFoundAfterExists) putRaw(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	s.puts++
	if s.puts == 1 {
		return blobstore.PutResult{}, blobstore.ErrExists
	}
	return s.fakeStore.Put(ctx, in)
}

// TestVanishedAfterPreconditionFailed: a 412 followed by a 404 is retried (a new Put
// would succeed), not dead-lettered.
func TestVanishedAfterPreconditionFailed(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := &notFoundAfterExists{fakeStore{objects: map[string][]byte{}, owners: map[string]string{}}}
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "k", "p/k", []byte("b")))
	if reason, p := stage.IsPermanent(err); p {
		t.Errorf("conditional PUT refused, then the object was gone: dead-lettered %s (%v); want a retry", reason, err)
	}
}

// TestOwnerFromOlderFerry: objects written before '%' keys were escaped carry the key as
// it is. (a) Key "100%.jpg" re-run after its source changed: its own object's owner "100%.jpg"
// is no longer metaValue("100%.jpg") = "100%25.jpg", so it is dead-lettered as "two source keys
// map to one S3 key". (b) The literal key "%C3%A9" (old owner "%C3%A9") and the key "é" (new
// owner "%C3%A9") mapped to one S3 key: "é" overwrites the other key's object.
func TestOwnerFromOlderFerry(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	fs := &fakeStore{objects: map[string][]byte{"p/100": []byte("old"), "p/e": []byte("bytes of the literal key")},
		owners: map[string]string{}, legacy: map[string]string{"p/100": "100%.jpg", "p/e": "%C3%A9"}}
	u := &Uploader{Names: n, JS: js, Store: fs, PartSize: 16 << 20}
	if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "100%.jpg", "p/100", []byte("new"))); err != nil {
		t.Errorf("(a) own object from an older ferry, source changed: Handle = %v", err)
	}
	err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "é", "p/e", []byte("bytes of é")))
	if _, p := stage.IsPermanent(err); !p {
		t.Errorf("(b) key \"é\" overwrote the object of the literal key \"%%C3%%A9\" written by an older ferry: S3 holds %q (Handle = %v)", fs.objects["p/e"], err)
	}
}

// Head answers as the client does: errors carry their fault kind.
func (s trimmingStore) Head(ctx context.Context, key string) (blobstore.HeadResult, error) {
	res, err := s.headRaw(ctx, key)
	return res, blobstore.Mark(err)
}

// Put answers as the client does: errors carry their fault kind.
func (s *notFoundAfterExists) Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	res, err := s.putRaw(ctx, in)
	return res, blobstore.Mark(err)
}

// delivered publishes m to BLOBS and returns it as the uploader's consumer delivers it.
func delivered(t *testing.T, js jetstream.JetStream, n bus.Names, m *nats.Msg) jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, n.Blobs, n.Uploader)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
