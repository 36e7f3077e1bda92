//go:build integration

package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"testing"
)

// Two source keys that the key rules map to one object must never overwrite each other, whatever
// their sizes: If-None-Match: * goes on the single PUT and on CompleteMultipartUpload alike.
func TestIntegrationIfAbsentEverySize(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	small, large := 64<<10, 11<<20+7
	for _, tc := range []struct {
		name          string
		first, second int
	}{
		{"single over single", small, small},
		{"multipart over single", small, large},
		{"single over multipart", large, small},
		{"multipart over multipart", large, large + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := prefix + "cond/" + tc.name
			first := randomBytes(tc.first)
			sum1 := md5.Sum(first)
			put(t, c, PutInput{Key: key, Body: first, MD5: sum1[:], PartSize: MinPartSize, IfAbsent: true})

			second := append(randomBytes(tc.second-1), 0xEE)
			sum2 := md5.Sum(second)
			_, err := c.Put(ctx, PutInput{Key: key, Body: second, MD5: sum2[:], PartSize: MinPartSize, IfAbsent: true})
			if !errors.Is(err, ErrExists) {
				t.Errorf("second conditional Put (%d bytes over %d) = %v, want ErrExists", tc.second, tc.first, err)
			}
			got, gerr := c.Get(ctx, key)
			if gerr != nil {
				t.Fatalf("Get: %v", gerr)
			}
			if !bytes.Equal(got, first) {
				t.Fatalf("the first object was overwritten: %d bytes now, %d first", len(got), len(first))
			}
		})
	}
}
