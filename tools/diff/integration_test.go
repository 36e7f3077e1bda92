//go:build integration

package diff

import (
	"context"
	"crypto/md5"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/config"
)

// TestIntegrationBucketDiff lists a few objects put under a unique prefix of the local stack's
// versitygw (FERRY_TEST_S3 overrides the endpoint) and finds the source keys without an object.
func TestIntegrationBucketDiff(t *testing.T) {
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
	d := config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: "ferry-test", PathStyle: true, Timeout: 30 * time.Second}
	c, err := blobstore.New(ctx, d, 4)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Check(ctx); err != nil {
		t.Fatalf("Check %s at %s (is the local stack up?): %v", d.Bucket, d.Endpoint, err)
	}
	prefix := fmt.Sprintf("diff-it/%d-%d/", time.Now().UnixNano(), rand.IntN(1e6))
	rules := testRules(t, prefix+"{hash2}/{key}")

	var src []byte
	var missing []string
	for i := range 40 {
		key := fmt.Sprintf("t01%024x.jpg", i*7919)
		src = fmt.Appendf(src, "%s\n", key)
		s3key, err := rules.Map(key)
		if err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			missing = append(missing, s3key+"\t"+key)
			continue
		}
		body := []byte(key)
		sum := md5.Sum(body)
		t.Cleanup(func() { _ = c.Delete(context.Background(), s3key) })
		if _, err := c.Put(ctx, blobstore.PutInput{Key: s3key, Body: body, MD5: sum[:]}); err != nil {
			t.Fatalf("Put %s: %v", s3key, err)
		}
	}
	src = append(src, "no spaces allowed\n"...)
	slices.Sort(missing)
	var want []string
	for _, m := range missing {
		want = append(want, m[len(m)-len("t01")-24-len(".jpg"):])
	}

	dir := t.TempDir()
	list := filepath.Join(dir, "source.txt")
	if err := os.WriteFile(list, src, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, listers := range []int{1, 8} {
		d := &differ{out: dir, tmp: t.TempDir(), budget: 4 << 10} // a few lines a chunk: spilled
		res, err := d.bucketDiff(ctx, list, rules, c, "ferry-test", prefix, listers, MissingInS3)
		if err != nil {
			t.Fatalf("bucketDiff: %v", err)
		}
		if got := readResult(t, filepath.Join(dir, MissingInS3)); !slices.Equal(got, want) {
			t.Errorf("%d listers: missing-in-s3 = %q, want %q", listers, got, want)
		}
		if res.Listed != 30 || res.Present != 30 || res.Missing != 10 || res.Invalid != 1 || res.Source.Lines != 41 {
			t.Errorf("%d listers: %+v, want 30 listed and present, 10 missing, 1 invalid of 41 lines", listers, res)
		}
	}
}
