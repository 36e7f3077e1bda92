//go:build integration

package keylist

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/config"
)

// Against the local stack's versitygw (FERRY_TEST_S3 overrides the endpoint), as the blobstore
// integration tests do.

const testBucket = "ferry-test"

func testClient(t *testing.T) (*blobstore.Client, string) {
	t.Helper()
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
	}
	if os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	endpoint := os.Getenv("FERRY_TEST_S3")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:7070"
	}
	ctx := context.Background()
	d := config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: testBucket, PathStyle: true, Timeout: 30 * time.Second}
	c, err := blobstore.New(ctx, d, 4)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Check(ctx); err != nil {
		t.Fatalf("Check %s at %s (is the local stack up?): %v", d.Bucket, d.Endpoint, err)
	}
	return c, fmt.Sprintf("keylist-it/%d-%d/", time.Now().UnixNano(), rand.IntN(1e6))
}

func putObject(t *testing.T, c *blobstore.Client, key string, body []byte) {
	t.Helper()
	sum := md5.Sum(body)
	t.Cleanup(func() { _ = c.Delete(context.Background(), key) })
	if _, err := c.Put(context.Background(), blobstore.PutInput{Key: key, Body: body, MD5: sum[:]}); err != nil {
		t.Fatalf("Put %s: %v", key, err)
	}
}

func TestIntegrationS3Lists(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	plain := content()
	objects := map[string][]byte{"lists/1.txt": plain, "lists/2.gz": gz(t, plain[:1000], plain[1000:]), "lists/3.zst": zst(t, plain)}
	for k, b := range objects {
		putObject(t, c, prefix+k, b)
	}
	got, err := Expand(ctx, []string{"s3://" + testBucket + "/" + prefix + "lists/*", "-"}, c)
	want := []string{"s3://" + testBucket + "/" + prefix + "lists/1.txt", "s3://" + testBucket + "/" + prefix + "lists/2.gz",
		"s3://" + testBucket + "/" + prefix + "lists/3.zst", "-"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Expand = %q, %v; want %q", got, err, want)
	}
	if _, err := Expand(ctx, []string{"s3://" + testBucket + "/" + prefix + "none*"}, c); err == nil {
		t.Error("Expand of an empty prefix succeeded")
	}
	for _, name := range want[:3] {
		for _, off := range []int64{0, 33, int64(len(plain))} {
			l, err := Open(ctx, name, off, c)
			if err != nil {
				t.Fatalf("Open %s at %d: %v", name, off, err)
			}
			b, err := io.ReadAll(l)
			l.Close()
			if err != nil || !bytes.Equal(b, plain[off:]) {
				t.Errorf("%s at %d: read %d bytes (%v), want %d", name, off, len(b), err, len(plain)-int(off))
			}
		}
	}
	if _, err := Open(ctx, "s3://"+testBucket+"/"+prefix+"missing.txt", 0, c); err == nil {
		t.Error("Open of a missing object succeeded")
	}
}
