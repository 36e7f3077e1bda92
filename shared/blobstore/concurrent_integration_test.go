//go:build integration

package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"sync"
	"testing"

	"github.com/ferry-migrate/ferry/shared/fault"
)

// TestIntegrationMetaBlanks: what the uploader's owner record relies on. A metadata value reads
// back byte for byte when it has no blank at either end; the SDK trims the ends, so "x " and
// " x" would both read back as "x" (the uploader escapes those blanks).
func TestIntegrationMetaBlanks(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	body := []byte("b")
	sum := md5.Sum(body)
	for _, tc := range []struct{ put, want string }{
		{"a  b", "a  b"}, {"%20x", "%20x"}, {"x%20", "x%20"}, {"p%C3%A4th/%C3%BC.jpg", "p%C3%A4th/%C3%BC.jpg"},
		{"x ", "x"}, {" x", "x"},
	} {
		key := prefix + "meta/" + tc.put
		put(t, c, PutInput{Key: key, Body: body, MD5: sum[:], Metadata: map[string]string{"ferry-source-key": tc.put}})
		h, err := c.Head(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Metadata["ferry-source-key"]; got != tc.want {
			t.Errorf("metadata %q reads back as %q, want %q", tc.put, got, tc.want)
		}
	}
}

// TestIntegrationConcurrentIfAbsent: two source keys on one S3 key, uploaded at the same
// moment (two uploader workers), at every size: exactly one wins, the other gets ErrExists (or a
// retryable conflict), and S3 holds the winner's bytes intact.
func TestIntegrationConcurrentIfAbsent(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	small, large := 64<<10, 11<<20+7
	for _, tc := range []struct {
		name          string
		first, second int
	}{
		{"single vs single", small, small},
		{"multipart vs single", large, small},
		{"multipart vs multipart", large, large},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 4 {
				key := prefix + "race/" + tc.name + "/" + string(rune('a'+round))
				t.Cleanup(func() { _ = c.Delete(context.Background(), key) })
				bodies := [][]byte{append(randomBytes(tc.first-1), 0x01), append(randomBytes(tc.second-1), 0x02)}
				errs := make([]error, 2)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i, b := range bodies {
					wg.Go(func() {
						<-start
						s := md5.Sum(b)
						_, errs[i] = c.Put(ctx, PutInput{Key: key, Body: b, MD5: s[:], PartSize: MinPartSize, IfAbsent: true})
					})
				}
				close(start)
				wg.Wait()
				won := 0
				for i, err := range errs {
					switch {
					case err == nil:
						won++
					case errors.Is(err, ErrExists):
					case Classify(err) == fault.Transient:
						t.Logf("round %d: writer %d: retryable %v", round, i, err)
					default:
						t.Errorf("round %d: writer %d: %v (kind %v)", round, i, err, Classify(err))
					}
				}
				got, err := c.Get(ctx, key)
				if err != nil {
					t.Fatalf("round %d: Get: %v", round, err)
				}
				if won != 1 {
					t.Errorf("round %d: %d writers succeeded (errs %v), want 1", round, won, errs)
				}
				for i, err := range errs {
					if err == nil && !bytes.Equal(got, bodies[i]) {
						t.Errorf("round %d: writer %d succeeded but S3 holds %d other bytes", round, i, len(got))
					}
				}
				h, err := c.Head(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				for i, b := range bodies {
					s := md5.Sum(b)
					if errs[i] == nil {
						if err := h.Check(Want{Size: int64(len(b)), MD5: s[:], CRC32C: CRC32C(b)}); err != nil {
							t.Errorf("round %d: winner %d does not verify: %v", round, i, err)
						}
					}
				}
			}
		})
	}
}
