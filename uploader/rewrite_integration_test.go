//go:build integration

package uploader

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/stage"
	"github.com/ferry-migrate/ferry/verifier"
)

// TestIntegrationRewriteOrder: two versions of one key, of writetimes 1 and 2 (two passes'
// messages, each with its own Ferry-Id), reach the uploader in either order, against the local
// stack's versitygw. S3 ends with version 2's bytes either way, and the verifier writes a DONE
// entry for both: version 2 verified, version 1 superseded by writetime 2. A small and a
// multipart version show the conditional replacement (If-Match) on both write paths. On a
// writetime tie (both versions at 5) version 2's bytes win as in Cassandra, being the greater
// (0x02... over 0x01...), and version 1 is superseded by writetime 5.
func TestIntegrationRewriteOrder(t *testing.T) {
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	endpoint := os.Getenv("FERRY_TEST_S3")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:7070"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: "ferry-test", PathStyle: true, Timeout: 30 * time.Second}
	store, err := blobstore.New(ctx, d, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Check(ctx); err != nil {
		t.Fatalf("Check %s at %s (is the local stack up?): %v", d.Bucket, d.Endpoint, err)
	}
	prefix := fmt.Sprintf("rewrite-%d/", time.Now().UnixNano())

	for _, tc := range []struct {
		name  string
		order []int64 // versions, in delivery order
		size  int     // of version 2; version 1 is 1 KiB
		tie   bool    // both versions have writetime 5; else version n has writetime n
	}{
		{"newer first", []int64{2, 1}, 2 << 10, false},
		{"older first", []int64{1, 2}, 2 << 10, false},
		{"older first, multipart replacement", []int64{1, 2}, blobstore.MinPartSize + 1<<20, false},
		{"newer multipart first", []int64{2, 1}, blobstore.MinPartSize + 1<<20, false},
		{"tie, smaller first", []int64{1, 2}, 2 << 10, true},
		{"tie, greater first", []int64{2, 1}, 2 << 10, true},
		{"tie, smaller first, multipart replacement", []int64{1, 2}, blobstore.MinPartSize + 1<<20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			objects, err := js.ObjectStore(ctx, n.Objects)
			if err != nil {
				t.Fatal(err)
			}
			key := "k/" + tc.name
			s3Key := prefix + key
			t.Cleanup(func() { _ = store.Delete(context.Background(), s3Key) })
			versions := map[int64][]byte{1: bytes.Repeat([]byte{1}, 1<<10), 2: bytes.Repeat([]byte{2}, tc.size)}
			wt := func(v int64) int64 {
				if tc.tie {
					return 5
				}
				return v
			}

			u := &Uploader{Names: n, JS: js, Objects: objects, Store: store, PartSize: blobstore.MinPartSize}
			for _, v := range tc.order {
				msg := rewriteMsg(t, js, n, key, s3Key, v, wt(v), versions[v])
				if err := stage.Once(ctx, js, u.Handle, msg); err != nil {
					t.Fatalf("upload of version %d: %v", v, err)
				}
			}
			got, err := store.Get(ctx, s3Key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, versions[2]) {
				t.Fatalf("S3 holds %d bytes starting %x; want version 2's %d", len(got), got[:1], len(versions[2]))
			}
			if h, err := store.Head(ctx, s3Key); err != nil || h.WriteTime != wt(2) {
				t.Fatalf("Head = writetime %d, %v; want %d", h.WriteTime, err, wt(2))
			}

			v := &verifier.Verifier{Names: n, JS: js, Store: store}
			cons, err := js.Consumer(ctx, n.Uploaded, n.Verifier)
			if err != nil {
				t.Fatal(err)
			}
			for range tc.order {
				msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
				if err != nil {
					t.Fatal(err)
				}
				if err := stage.Once(ctx, js, v.Handle, msg); err != nil {
					t.Fatalf("verify: %v", err)
				}
				_ = msg.Ack()
			}
			done := map[string]int64{} // version → superseded by
			dc, err := js.OrderedConsumer(ctx, n.Done, jetstream.OrderedConsumerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				m, err := dc.Next(jetstream.FetchMaxWait(2 * time.Second))
				if err != nil {
					t.Fatalf("DONE: %v", err)
				}
				rec, err := bus.DecodeRecord(m.Headers())
				if err != nil {
					t.Fatal(err)
				}
				done[rec.ID[strings.LastIndex(rec.ID, ".p")+2:]] = rec.Superseded
			}
			if len(done) != 2 || done["2"] != 0 || done["1"] != wt(2) {
				t.Fatalf("DONE entries (version → superseded by) %v; want {1: %d, 2: 0}", done, wt(2))
			}
		})
	}
}

// rewriteMsg publishes the BLOBS message of one version of key, as the fetcher builds it, with
// its own Ferry-Id (pass pass's), and returns it as the uploader's consumer delivers it.
func rewriteMsg(t *testing.T, js jetstream.JetStream, n bus.Names, key, s3Key string, pass, wt int64, body []byte) jetstream.Msg {
	t.Helper()
	sum := md5.Sum(body)
	rec := bus.Record{ID: bus.KeyID(n.Job, key) + ".p" + strconv.FormatInt(pass, 10), Key: key, S3Key: s3Key, Size: int64(len(body)),
		MD5: sum[:], CRC32C: crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)), HasCRC32C: true, WriteTime: wt}
	m := nats.NewMsg(n.BlobsSubject)
	rec.Encode(m.Header)
	m.Data = body
	return delivered(t, js, n, m)
}
