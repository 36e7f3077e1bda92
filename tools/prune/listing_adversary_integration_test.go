//go:build integration

package prune

import (
	"context"
	"crypto/md5"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/config"
)

// TestIntegrationAdversaryOddKeys: keys the rules accept but that a server could list in another
// form or order (Unicode NFC and NFD, spaces at a segment's edges, percent signs, '+', '\', '-'
// against '/' in the listing order, a BOM, U+2028, an emoji, a 1,000-byte key in segments under 255 bytes, the most versitygw's posix store takes) are each listed
// back under the name they were written with and in the order prune's ranges assume: a dry run
// against versitygw, with more listers than keys, finds nothing only in S3 and nothing missing.
// (A key listed in another form would be both missing and a candidate: --delete would delete a
// live key's object.)
func TestIntegrationAdversaryOddKeys(t *testing.T) {
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
	}
	if os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ctx := context.Background()
	endpoint := os.Getenv("FERRY_TEST_S3")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:7070"
	}
	dest := config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: "ferry-test", PathStyle: true, Timeout: 30 * time.Second}
	c, err := blobstore.New(ctx, dest, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(ctx); err != nil {
		t.Fatalf("s3 (make up first): %v", err)
	}
	prefix := fmt.Sprintf("prune-odd/%d-%d/", time.Now().UnixNano(), rand.IntN(1e6))
	t.Cleanup(func() {
		_ = c.ListObjects(context.Background(), prefix, "", "", func(o blobstore.Object) error {
			return c.Delete(context.Background(), o.Key)
		})
	})
	long := make([]byte, 1000-len(prefix))
	for i := range long {
		long[i] = 'a' + byte(i%26)
		if i%200 == 199 { // versitygw's posix store refuses a path segment over 255 bytes (KeyTooLongError)
			long[i] = '/'
		}
	}
	keys := []string{
		"caf\u00e9.jpg", "cafe\u0301.jpg", "sp ace.jpg", "x/ lead", "x/trail /y", "plus+sign", "pct%2Fenc", "pct%20",
		"back\\slash", "a-b", "a/b", "a.b", "a0", "a~", "hash#", "q?mark", "amp&", "star*", "lt<gt>", "quote\"'",
		"colon:", "...", "a/.hidden", "\ufeffbom", "ls\u2028sep", "emoji\U0001F600", "nbsp\u00a0", "del\u00ff", "zz", string(long),
	}
	rules := compileRules(t, prefix+"{key}")
	var rows []Row
	for _, k := range keys {
		s3key, err := rules.Map(k)
		if err != nil {
			t.Logf("rules refuse %q: %v", k, err)
			continue
		}
		rows = append(rows, Row{Key: []byte(k), WriteTime: 100})
		sum := md5.Sum([]byte(k))
		if _, err := c.Put(ctx, blobstore.PutInput{Key: s3key, Body: []byte(k), MD5: sum[:], Metadata: map[string]string{
			blobstore.OwnerMeta: blobstore.OwnerValue(k), WriteTimeMeta: "100"}}); err != nil {
			t.Errorf("put %q: %v", k, err)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	o := Options{Out: t.TempDir(), Tmp: t.TempDir(), Mem: 64 << 20, Prefix: prefix, MaxDelete: Threshold{Count: 0},
		Listers: 64, Workers: 4}
	res, err := Run(ctx, fakeSource{rows: rows}, bucketOf(c), rules, &fakeRecorder{}, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.OnlyInS3 != 0 || res.Missing != 0 || res.Stale != 0 || res.Objects != int64(len(rows)) {
		t.Errorf("%d keys: objects %d, only in S3 %v, missing %v, stale %d", len(rows), res.Objects,
			res.Examples["only_in_s3"], res.Examples["missing"], res.Stale)
	}
}
