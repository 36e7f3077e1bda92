package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// fakeStore serves one object's HEAD and GET.
type fakeStore struct {
	head   blobstore.HeadResult
	body   []byte
	err    error
	getErr error // Get fails with this, else with err
}

func (f fakeStore) headRaw(context.Context, string) (blobstore.HeadResult, error) {
	return f.head, f.err
}
func (f fakeStore) getRaw(context.Context, string) ([]byte, error) {
	if f.getErr != nil {
		return nil, f.getErr
	}
	return f.body, f.err
}

func TestHandle(t *testing.T) {
	body := []byte("the blob")
	sum := md5.Sum(body)
	good := blobstore.HeadResult{Key: "p/k1", Size: int64(len(body)), ETag: hex.EncodeToString(sum[:])}
	meta := map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:])}
	multipart := blobstore.HeadResult{Key: "p/k1", Size: int64(len(body)), ETag: "abc-2", Multipart: true, Metadata: meta}
	// An SSE-KMS or SSE-C object: its ETag is not the MD5 of its bytes.
	random := "0f9e8d7c6b5a49382716f5e4d3c2b1a0"
	sse := blobstore.HeadResult{Key: "p/k1", Size: int64(len(body)), ETag: random, Metadata: meta, CRC32C: blobstore.CRC32C(body)}
	unreachable := fmt.Errorf("head s3://b/p/k1: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})
	tests := []struct {
		name       string
		store      fakeStore
		noCRC      bool // the message carries no source CRC32C
		sample     float64
		wantReason string
		wantDone   bool
		wantOutage bool
	}{
		{name: "random etag, crc32c and metadata match", store: fakeStore{head: sse}, wantDone: true},
		{name: "random etag, metadata only", store: fakeStore{head: blobstore.HeadResult{Key: "p/k1", Size: sse.Size, ETag: random, Metadata: meta}}, wantDone: true},
		{name: "random etag, crc32c only", store: fakeStore{head: blobstore.HeadResult{Key: "p/k1", Size: sse.Size, ETag: random, CRC32C: sse.CRC32C}}, wantDone: true},
		{name: "random etag, old message without crc32c", noCRC: true, store: fakeStore{head: sse}, wantDone: true},
		{name: "crc32c differs", store: fakeStore{head: blobstore.HeadResult{Key: "p/k1", Size: sse.Size, ETag: good.ETag, Metadata: meta, CRC32C: blobstore.CRC32C([]byte("other"))}}, wantReason: bus.ReasonVerifyMismatch},
		{name: "S3 unreachable: held, no delivery used", store: fakeStore{err: unreachable}, wantOutage: true},
		{name: "S3 unreachable at the deep check: held", sample: 1, store: fakeStore{head: good, err: nil, getErr: unreachable}, wantOutage: true},
		{name: "single part matches", store: fakeStore{head: good}, wantDone: true},
		{name: "multipart matches by stored md5", store: fakeStore{head: multipart}, wantDone: true},
		{name: "missing", store: fakeStore{err: blobstore.ErrNotFound}, wantReason: bus.ReasonVerifyMissing},
		{name: "wrong size", store: fakeStore{head: blobstore.HeadResult{Key: "p/k1", Size: 3, ETag: good.ETag}}, wantReason: bus.ReasonVerifyMismatch},
		{name: "wrong etag", store: fakeStore{head: blobstore.HeadResult{Key: "p/k1", Size: good.Size, ETag: "00"}}, wantReason: bus.ReasonVerifyMismatch},
		{name: "deep check reads other bytes", sample: 1, store: fakeStore{head: good, body: []byte("the blub")}, wantReason: bus.ReasonVerifyMismatch},
		{name: "deep check reads the bytes", sample: 1, store: fakeStore{head: good, body: body}, wantDone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			ctx := context.Background()
			m := nats.NewMsg(n.UploadedSubject)
			m.Header.Set(bus.HdrID, "id1")
			m.Header.Set(bus.HdrKey, "k1")
			m.Header.Set(bus.HdrS3Key, "p/k1")
			m.Header.Set(bus.HdrSize, strconv.Itoa(len(body)))
			m.Header.Set(bus.HdrMD5, hex.EncodeToString(sum[:]))
			if !tt.noCRC {
				m.Header.Set(bus.HdrCRC32C, strconv.FormatUint(uint64(crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli))), 10))
			}
			if _, err := js.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
			cons, err := js.Consumer(ctx, n.Uploaded, n.Verifier)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
			if err != nil {
				t.Fatal(err)
			}
			v := &Verifier{Names: n, JS: js, Store: tt.store, Sample: tt.sample}
			err = stage.Once(ctx, js, v.Handle, msg)
			if tt.wantOutage {
				if !stage.IsOutage(err) {
					t.Fatalf("Handle = %v; want an outage", err)
				}
				return
			}
			if reason, _ := stage.IsPermanent(err); reason != tt.wantReason || (tt.wantReason == "" && err != nil) {
				t.Fatalf("Handle = %v (reason %q); want reason %q", err, reason, tt.wantReason)
			}
			if got := bustest.Msgs(t, js, n.Done); (got == 1) != tt.wantDone {
				t.Errorf("DONE holds %d, want done=%v", got, tt.wantDone)
			}
		})
	}
}

// Head answers as the client does: errors carry their fault kind.
func (f fakeStore) Head(ctx context.Context, key string) (blobstore.HeadResult, error) {
	res, err := f.headRaw(ctx, key)
	return res, blobstore.Mark(err)
}

// GetIfMatch answers as the client does (whatever the ETag: the object has one version): errors carry their fault kind.
func (f fakeStore) GetIfMatch(ctx context.Context, key, _ string) ([]byte, error) {
	res, err := f.getRaw(ctx, key)
	return res, blobstore.Mark(err)
}
