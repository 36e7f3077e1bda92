//go:build integration

package blobstore

import (
	"context"
	"crypto/md5"
	"errors"
	"io"
	"slices"
	"testing"
)

func TestIntegrationListAndGetRange(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	keys := []string{prefix + "a/1", prefix + "a/2", prefix + "b", prefix + "c/3"}
	for _, k := range keys {
		body := []byte("body of " + k)
		sum := md5.Sum(body)
		put(t, c, PutInput{Key: k, Body: body, MD5: sum[:]})
	}
	var got []string
	if err := c.List(ctx, testBucket, prefix, func(k string, size int64) error {
		if size != int64(len("body of "+k)) {
			t.Errorf("List: %s has size %d", k, size)
		}
		got = append(got, k)
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.Equal(got, keys) {
		t.Errorf("List = %q, want %q", got, keys)
	}
	got = got[:0]
	if err := c.ListRange(ctx, testBucket, prefix, prefix+"a/1", prefix+"b", func(k string, _ int64) error {
		got = append(got, k)
		return nil
	}); err != nil {
		t.Fatalf("ListRange: %v", err)
	}
	if want := keys[1:3]; !slices.Equal(got, want) {
		t.Errorf("ListRange(after a/1, up to b) = %q, want %q", got, want)
	}
	folders, err := c.CommonPrefixes(ctx, testBucket, prefix, "/")
	if err != nil || !slices.Equal(folders, []string{prefix + "a/", prefix + "c/"}) {
		t.Errorf("CommonPrefixes = %q, %v", folders, err)
	}

	body := "body of " + keys[2]
	for _, off := range []int64{0, 5, int64(len(body))} {
		r, size, err := c.GetRange(ctx, testBucket, keys[2], off)
		if err != nil {
			t.Fatalf("GetRange at %d: %v", off, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(b) != body[off:] || size != int64(len(body)) {
			t.Errorf("GetRange at %d = %q size %d (%v), want %q size %d", off, b, size, err, body[off:], len(body))
		}
	}
	if _, _, err := c.GetRange(ctx, testBucket, keys[2], int64(len(body))+1); err == nil {
		t.Error("GetRange past the end succeeded")
	}
	if _, _, err := c.GetRange(ctx, testBucket, prefix+"missing", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetRange of a missing object = %v, want ErrNotFound", err)
	}
}
