package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
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
	head blobstore.HeadResult
	body []byte
	err  error
}

func (f fakeStore) Head(context.Context, string) (blobstore.HeadResult, error) { return f.head, f.err }
func (f fakeStore) Get(context.Context, string) ([]byte, error)                { return f.body, f.err }

func TestHandle(t *testing.T) {
	body := []byte("the blob")
	sum := md5.Sum(body)
	good := blobstore.HeadResult{Key: "p/k1", Size: int64(len(body)), ETag: hex.EncodeToString(sum[:])}
	multipart := blobstore.HeadResult{Key: "p/k1", Size: int64(len(body)), ETag: "abc-2", Multipart: true,
		Metadata: map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:])}}
	tests := []struct {
		name       string
		store      fakeStore
		sample     float64
		wantReason string
		wantDone   bool
	}{
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
			err = v.Handle(ctx, msg)
			if reason, _ := stage.IsPermanent(err); reason != tt.wantReason || (tt.wantReason == "" && err != nil) {
				t.Fatalf("Handle = %v (reason %q); want reason %q", err, reason, tt.wantReason)
			}
			if got := bustest.Msgs(t, js, n.Done); (got == 1) != tt.wantDone {
				t.Errorf("DONE holds %d, want done=%v", got, tt.wantDone)
			}
		})
	}
}
