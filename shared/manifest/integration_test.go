//go:build integration

package manifest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
)

// s3Store is the local stack's versitygw (FERRY_TEST_S3 overrides it), bucket ferry-test, and a
// fresh prefix.
func s3Store(t *testing.T) (*blobstore.Client, string) {
	t.Helper()
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	endpoint := os.Getenv("FERRY_TEST_S3")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:7070"
	}
	c, err := blobstore.New(context.Background(), config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: "ferry-test", PathStyle: true, Timeout: 30 * time.Second}, 4)
	if err != nil {
		t.Fatal(err)
	}
	return c, fmt.Sprintf("manifest-it/%d/", time.Now().UnixNano())
}

// TestIntegrationDrain: against versitygw, every DONE entry lands in exactly one segment (two
// drains racing, the create-once write deciding), DONE ends empty and the state counts them all.
func TestIntegrationDrain(t *testing.T) {
	js, n := bustest.Job(t)
	st, prefix := s3Store(t)
	drainsRace(t, js, n, st, prefix)
	msgs, last, state := doneState(t, js, n)
	if msgs != 0 || last != 400 || state.Entries != 400 || state.NextSeq != 401 || state.Lost != 0 {
		t.Errorf("DONE holds %d (last %d), state %+v", msgs, last, state)
	}
	// A segment is plain gzip'd CSV whose first columns are what S3 Batch Operations reads.
	var first string
	if err := st.ListObjects(context.Background(), Dir(prefix, n.Job), "", "", func(o blobstore.Object) error {
		if first == "" {
			first = o.Key
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := SegmentKey(prefix, n.Job, 1); first != want {
		t.Errorf("first segment %q, want %q", first, want)
	}
}
