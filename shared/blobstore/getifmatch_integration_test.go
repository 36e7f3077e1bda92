//go:build integration

package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"testing"
)

// GetIfMatch reads the version a HEAD saw, and nothing else: after a replacement the old ETag
// gets ErrChanged, not the new bytes.
func TestIntegrationGetIfMatch(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	key := prefix + "getifmatch/k"
	version := func(b []byte) PutInput {
		sum := md5.Sum(b)
		return PutInput{Key: key, Body: b, MD5: sum[:]}
	}
	v1, v2 := version([]byte("the first version")), version([]byte("the second version"))
	put(t, c, v1)
	h1, err := c.Head(ctx, key)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if got, err := c.GetIfMatch(ctx, key, h1.ETag); err != nil || !bytes.Equal(got, v1.Body) {
		t.Fatalf("GetIfMatch(its ETag) = %q, %v; want %q", got, err, v1.Body)
	}
	put(t, c, v2)
	if got, err := c.GetIfMatch(ctx, key, h1.ETag); !errors.Is(err, ErrChanged) {
		t.Fatalf("GetIfMatch(the replaced version's ETag) = %q, %v; want ErrChanged", got, err)
	}
	if err := c.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetIfMatch(ctx, key, h1.ETag); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrChanged) {
		t.Fatalf("GetIfMatch of a deleted object: %v; want ErrNotFound or ErrChanged", err)
	}
}
