//go:build integration

package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"testing"
)

// A replacement is conditional on the ETag the writer saw (If-Match on the single PUT and on
// CompleteMultipartUpload): with that ETag it replaces the object, with a stale one (the object
// was replaced meanwhile) or for an object gone since, it writes nothing and says ErrChanged.
// The writetime goes with the bytes, in the metadata, and HEAD reads it back.
func TestIntegrationIfMatchEverySize(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	small, large := 64<<10, 11<<20+7
	for _, tc := range []struct {
		name          string
		first, second int
	}{
		{"single over single", small, small + 1},
		{"multipart over single", small, large},
		{"single over multipart", large, small},
		{"multipart over multipart", large, large + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := prefix + "ifmatch/" + tc.name
			version := func(size int, wt int64, last byte) PutInput {
				b := append(randomBytes(size-1), last)
				sum := md5.Sum(b)
				return PutInput{Key: key, Body: b, MD5: sum[:], PartSize: MinPartSize,
					Metadata: map[string]string{WriteTimeMeta: WriteTimeValue(wt)}}
			}
			holds := func(want PutInput, wt int64) HeadResult {
				t.Helper()
				got, err := c.Get(ctx, key)
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				if !bytes.Equal(got, want.Body) {
					t.Fatalf("object holds %d other bytes, want the %d of the version written last", len(got), len(want.Body))
				}
				h, err := c.Head(ctx, key)
				if err != nil {
					t.Fatalf("Head: %v", err)
				}
				if h.WriteTime != wt {
					t.Fatalf("Head WriteTime = %d, want %d", h.WriteTime, wt)
				}
				return h
			}

			v1 := version(tc.first, 1, 0x01)
			v1.IfAbsent = true
			put(t, c, v1)
			h1 := holds(v1, 1)

			// Stale first: an ETag the object never had.
			v2 := version(tc.second, 2, 0x02)
			v2.IfMatch = "0123456789abcdef0123456789abcdef"
			if _, err := c.Put(ctx, v2); !errors.Is(err, ErrChanged) {
				t.Fatalf("Put with a stale ETag = %v, want ErrChanged", err)
			}
			holds(v1, 1)

			// Then the ETag HEAD saw: replaced.
			v2.IfMatch = h1.ETag
			if _, err := c.Put(ctx, v2); err != nil {
				t.Fatalf("Put with the current ETag: %v", err)
			}
			h2 := holds(v2, 2)
			if h2.ETag == h1.ETag {
				t.Fatalf("the ETag did not change (%s)", h2.ETag)
			}

			// A second writer that saw the first version lost the race: refused, v2 stays.
			v3 := version(tc.first, 3, 0x03)
			v3.IfMatch = h1.ETag
			if _, err := c.Put(ctx, v3); !errors.Is(err, ErrChanged) {
				t.Fatalf("Put with the replaced object's ETag = %v, want ErrChanged", err)
			}
			holds(v2, 2)

			// Gone since it was read: nothing is created.
			if err := c.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			v3.IfMatch = h2.ETag
			if _, err := c.Put(ctx, v3); !errors.Is(err, ErrChanged) {
				t.Fatalf("Put with If-Match on a deleted object = %v, want ErrChanged", err)
			}
			if _, err := c.Head(ctx, key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Head after a refused If-Match put on a deleted object = %v, want ErrNotFound", err)
			}
		})
	}
}
