//go:build integration

package report

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/manifest"
)

// TestIntegrationReportReadsManifests: once `ferry manifest` has drained DONE into segments on
// versitygw, the report still counts every verified key and per minute, and a failure dead
// letter is resolved by a DONE entry stored after it that now lives in a segment. Without the
// segments (no job file) such failures stay unresolved and the report says why: the proof is
// withheld, never given on what was not read.
func TestIntegrationReportReadsManifests(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	endpoint := os.Getenv("FERRY_TEST_S3")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:7070"
	}
	store, err := blobstore.New(ctx, config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: "ferry-test", PathStyle: true, Timeout: 30 * time.Second}, 4)
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("report-manifest-it/%d/", time.Now().UnixNano())

	done := func(key string) {
		t.Helper()
		rec := bus.Record{ID: bus.KeyID(n.Job, key), Key: key, S3Key: "ab/" + key, Size: 3, MD5: make([]byte, 16)}
		m := nats.NewMsg(n.DoneSubject)
		rec.Encode(m.Header)
		m.Header.Set("Nats-Msg-Id", bus.MsgID("done", rec.ID))
		m.Data = []byte(key)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	done("verified-before-its-failure")
	for i := 0; i < 150; i++ {
		done(fmt.Sprintf("k%03d", i))
	}
	for _, k := range []string{"replayed-1", "replayed-2", "verified-before-its-failure"} {
		if err := bus.PublishDeadLetter(ctx, js, n, bus.DeadLetter{Key: k, Stage: bus.StageVerifier, Reason: bus.ReasonVerifyMismatch, Err: "other bytes", Attempts: 1}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond)
	done("replayed-1")
	done("replayed-2")
	d := &manifest.Drain{JS: js, Names: n, Store: store, Prefix: prefix, Batch: 40, Log: slog.Default(), Now: time.Now}
	for {
		res, err := d.Round(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Entries == 0 {
			break
		}
	}

	r, err := WriteWith(ctx, js, n, t.TempDir(), time.Now(), Options{Manifests: store, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var perMinute uint64
	for _, b := range r.PerMinute {
		perMinute += b.Verified
	}
	if r.Verified != 153 || perMinute != 153 || r.Manifest.Entries != 153 || r.Manifest.InDone != 0 || r.Manifest.Segments != 4 {
		t.Errorf("verified %d, per minute %d, manifest %+v; want 153 in 4 segments", r.Verified, perMinute, r.Manifest)
	}
	if r.Unresolved != 1 || len(r.UnresolvedExamples) != 1 || r.UnresolvedExamples[0] != "verified-before-its-failure" {
		t.Errorf("unresolved %d %v; want only the key verified before its failure", r.Unresolved, r.UnresolvedExamples)
	}

	r, err = Write(ctx, js, n, t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Unresolved != 3 || r.Manifest.Unread == "" {
		t.Errorf("without the segments: unresolved %d (want all 3), unread %q", r.Unresolved, r.Manifest.Unread)
	}
}
