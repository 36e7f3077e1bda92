//go:build integration

package blobstore

import (
	"context"
	"crypto/md5"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestIntegrationPruneCalls: the listing gives each object's time, Inspect its owner and time,
// Copy moves only the version it was told, Delete removes.
func TestIntegrationPruneCalls(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	before := time.Now().Add(-time.Minute)
	keys := []string{prefix + "a", prefix + "b c", prefix + "d/é%"}
	for _, k := range keys {
		body := []byte("body of " + k)
		sum := md5.Sum(body)
		put(t, c, PutInput{Key: k, Body: body, MD5: sum[:], Metadata: map[string]string{OwnerMeta: OwnerValue("src é " + k)}})
	}
	var got []string
	if err := c.ListObjects(ctx, prefix, "", "", func(o Object) error {
		if o.LastModified.Before(before) || o.LastModified.After(time.Now().Add(time.Minute)) || o.Size != int64(len("body of "+o.Key)) {
			t.Errorf("ListObjects: %+v", o)
		}
		got = append(got, o.Key)
		return nil
	}); err != nil {
		t.Fatalf("ListObjects: %v", err)
	}
	if !slices.Equal(got, keys) {
		t.Errorf("ListObjects = %q, want %q", got, keys)
	}
	for _, k := range keys {
		info, err := c.Inspect(ctx, k)
		if err != nil {
			t.Fatalf("Inspect %s: %v", k, err)
		}
		if info.Owner() != "src é "+k || info.ETag == "" || info.LastModified.IsZero() {
			t.Errorf("Inspect %s: owner %q, etag %q, time %v", k, info.Owner(), info.ETag, info.LastModified)
		}
		dst := prefix + "quarantine/" + k
		t.Cleanup(func() { _ = c.Delete(context.Background(), dst) })
		if err := c.Copy(ctx, k, dst, "0123456789abcdef0123456789abcdef"); err == nil {
			t.Errorf("Copy %s with a wrong ETag: no error", k)
		}
		if err := c.Copy(ctx, k, dst, info.ETag); err != nil {
			t.Fatalf("Copy %s: %v", k, err)
		}
		b, err := c.Get(ctx, dst)
		if err != nil || string(b) != "body of "+k {
			t.Errorf("copy of %s = %q, %v", k, b, err)
		}
		if moved, err := c.Inspect(ctx, dst); err != nil || moved.Owner() != info.Owner() {
			t.Errorf("copy of %s: owner %q, %v (metadata not copied)", k, moved.Owner(), err)
		}
		if err := c.Delete(ctx, k); err != nil {
			t.Fatalf("Delete %s: %v", k, err)
		}
		if _, err := c.Inspect(ctx, k); !errors.Is(err, ErrNotFound) {
			t.Errorf("Inspect %s after Delete: %v, want ErrNotFound", k, err)
		}
	}
}

// TestIntegrationPruneGuards: Copy never replaces an object at its destination; DeleteIf leaves
// an object whose ETag changed (versitygw honours If-Match on DELETE); Clock reads the server's
// time and leaves no marker behind.
func TestIntegrationPruneGuards(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	putBody := func(k, body string) string {
		sum := md5.Sum([]byte(body))
		res, err := c.Put(ctx, PutInput{Key: k, Body: []byte(body), MD5: sum[:]})
		if err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		t.Cleanup(func() { _ = c.Delete(context.Background(), k) })
		return res.ETag
	}
	src, dst := prefix+"src", prefix+"dst"
	etag := putBody(src, "old")
	putBody(dst, "live")
	if err := c.Copy(ctx, src, dst, etag); !errors.Is(err, ErrExists) {
		t.Errorf("Copy onto an existing object: %v, want ErrExists", err)
	}
	if b, err := c.Get(ctx, dst); err != nil || string(b) != "live" {
		t.Errorf("destination after a refused copy = %q, %v; want live", b, err)
	}

	newTag := putBody(src, "rewritten") // an upload after prune's HEAD
	if err := c.DeleteIf(ctx, src, etag); !errors.Is(err, ErrChanged) {
		t.Errorf("DeleteIf with the old ETag: %v, want ErrChanged", err)
	}
	if b, err := c.Get(ctx, src); err != nil || string(b) != "rewritten" {
		t.Errorf("object after a refused conditional delete = %q, %v", b, err)
	}
	if err := c.DeleteIf(ctx, src, newTag); err != nil {
		t.Fatalf("DeleteIf with the current ETag: %v", err)
	}
	if _, err := c.Inspect(ctx, src); !errors.Is(err, ErrNotFound) {
		t.Errorf("after DeleteIf: %v, want ErrNotFound", err)
	}

	before := time.Now()
	now, err := c.Clock(ctx)
	if err != nil {
		t.Fatalf("Clock: %v", err)
	}
	if d := now.Sub(before); d < -time.Minute || d > time.Minute {
		t.Errorf("Clock = %v, host %v: the local S3 runs on this host", now, before)
	}
	var left []string
	if err := c.ListObjects(ctx, MarkerPrefix, "", "", func(o Object) error {
		if !o.LastModified.Before(before.Add(-time.Second)) {
			left = append(left, o.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("clock markers left behind: %q", left)
	}
}
