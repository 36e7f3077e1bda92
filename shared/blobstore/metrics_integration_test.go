//go:build integration

package blobstore

import (
	"context"
	"crypto/md5"
	"testing"
)

// TestMiddlewareAgainstServer records real calls against versitygw: a single PUT, a multipart
// upload (create, parts, complete), HEADs and a GET, with their bytes.
func TestMiddlewareAgainstServer(t *testing.T) {
	forgetEndpoints(t)
	c, prefix := testClient(t)
	ctx := context.Background()
	before := snapshot(t)

	small := randomBytes(1000)
	sum := md5.Sum(small)
	put(t, c, PutInput{Key: prefix + "small", Body: small, MD5: sum[:]})
	large := randomBytes(MinPartSize + 1000)
	lsum := md5.Sum(large)
	if res := put(t, c, PutInput{Key: prefix + "large", Body: large, MD5: lsum[:], PartSize: MinPartSize}); !res.Multipart {
		t.Fatal("large object not multipart")
	}
	if _, err := c.Head(ctx, prefix+"small"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Head(ctx, prefix+"absent"); err == nil {
		t.Fatal("head of an absent key: no error")
	}
	if b, err := c.Get(ctx, prefix+"small"); err != nil || len(b) != len(small) {
		t.Fatalf("get: %d bytes, %v", len(b), err)
	}

	got := delta(before, snapshot(t))
	for k, want := range map[string]float64{
		"ferry_s3_request_seconds{operation=PutObject,result=ok}":               1,
		"ferry_s3_request_seconds{operation=CreateMultipartUpload,result=ok}":   1,
		"ferry_s3_request_seconds{operation=UploadPart,result=ok}":              2,
		"ferry_s3_request_seconds{operation=CompleteMultipartUpload,result=ok}": 1,
		"ferry_s3_request_seconds{operation=HeadObject,result=ok}":              1,
		"ferry_s3_request_seconds{operation=HeadObject,result=not_found}":       1,
		"ferry_s3_request_seconds{operation=GetObject,result=ok}":               1,
		"ferry_s3_bytes_total{operation=PutObject}":                             1000,
		"ferry_s3_bytes_total{operation=UploadPart}":                            float64(len(large)),
		"ferry_s3_bytes_total{operation=GetObject}":                             1000,
	} {
		if got[k] != want {
			t.Errorf("%s: +%g, want +%g (all changes: %v)", k, got[k], want, got)
		}
	}
	if err := Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
}
