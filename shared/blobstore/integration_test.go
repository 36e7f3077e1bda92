//go:build integration

package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/fault"
)

// These tests run against a real S3-compatible server: the local stack's versitygw by default.
// FERRY_TEST_S3 overrides the endpoint; credentials come from the AWS chain (the local stack's
// test keys when the environment has none).

const testBucket = "ferry-test"

func testDest(t *testing.T, bucket string) config.Destination {
	t.Helper()
	endpoint := os.Getenv("FERRY_TEST_S3")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:7070"
	}
	return config.Destination{Endpoint: endpoint, Region: "us-east-1", Bucket: bucket, PathStyle: true, Timeout: 30 * time.Second}
}

// testEnv points the AWS chain at the local stack's keys unless the environment names others, and
// keeps the chain from probing instance metadata.
func testEnv(t *testing.T) {
	t.Helper()
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		t.Setenv("AWS_ACCESS_KEY_ID", "ferrylocal")
	}
	if os.Getenv("AWS_SECRET_ACCESS_KEY") == "" {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "ferrylocalsecret")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func testClient(t *testing.T) (*Client, string) {
	t.Helper()
	testEnv(t)
	ctx := context.Background()
	d := testDest(t, testBucket)
	c, err := New(ctx, d, 4)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Check(ctx); err != nil {
		t.Fatalf("Check %s at %s (is the local stack up?): %v", d.Bucket, d.Endpoint, err)
	}
	prefix := fmt.Sprintf("blobstore-it/%d-%d/", time.Now().UnixNano(), rand.IntN(1e6))
	return c, prefix
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	_, _ = r.Read(b)
	return b
}

// put stores body under key and removes it when the test ends.
func put(t *testing.T, c *Client, in PutInput) PutResult {
	t.Helper()
	ctx := context.Background()
	t.Cleanup(func() { _ = c.Delete(context.Background(), in.Key) })
	res, err := c.Put(ctx, in)
	if err != nil {
		t.Fatalf("Put %s (%d bytes): %v (kind %v)", in.Key, len(in.Body), err, Classify(err))
	}
	return res
}

func TestIntegrationSinglePut(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	for _, size := range []int{0, 1, 16 << 10, 300 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			body := randomBytes(size)
			sum := md5.Sum(body)
			key := fmt.Sprintf("%ssingle-%d.bin", prefix, size)
			res := put(t, c, PutInput{Key: key, Body: body, MD5: sum[:], ContentType: "application/octet-stream",
				Metadata: map[string]string{"ferry-source": "dc1"}, PartSize: MinPartSize})
			if res.Multipart || res.ETag != fmt.Sprintf("%x", sum) {
				t.Errorf("PutResult %+v, want single part with ETag %x", res, sum)
			}
			got, err := c.Get(ctx, key)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("Get returned %d bytes that differ from the %d stored", len(got), len(body))
			}
			h, err := c.Head(ctx, key)
			if err != nil {
				t.Fatalf("Head: %v", err)
			}
			if h.Multipart || h.ETag != fmt.Sprintf("%x", sum) || h.Size != int64(size) {
				t.Errorf("Head %+v, want single part, size %d, ETag %x", h, size, sum)
			}
			if err := h.Matches(int64(size), sum[:]); err != nil {
				t.Errorf("Matches: %v", err)
			}
			if metaValue(h.Metadata, MD5Meta) != fmt.Sprintf("%x", sum) || metaValue(h.Metadata, "ferry-source") != "dc1" {
				t.Errorf("metadata %v, want %s and ferry-source", h.Metadata, MD5Meta)
			}
			other := md5.Sum(append(body, 0))
			var me *MismatchError
			if err := h.Matches(int64(size)+1, sum[:]); !errors.As(err, &me) || me.Field != "size" {
				t.Errorf("Matches with wrong size = %v, want size mismatch", err)
			}
			if err := h.Matches(int64(size), other[:]); !errors.As(err, &me) || me.Field != MD5Meta {
				t.Errorf("Matches with wrong md5 = %v, want %s mismatch", err, MD5Meta)
			}
			if h.CRC32C == "" || h.CRC32C != res.CRC32C || res.CRC32C != CRC32C(body) {
				t.Errorf("Head CRC32C %q, Put %q, want %q", h.CRC32C, res.CRC32C, CRC32C(body))
			}
			if err := h.Check(Want{Size: int64(size), MD5: sum[:], CRC32C: CRC32C(append(body, 1))}); !errors.As(err, &me) || me.Field != "crc32c" {
				t.Errorf("Check with wrong crc32c = %v, want crc32c mismatch", err)
			}
		})
	}
}

func TestIntegrationWrongMD5Refused(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	key := prefix + "bad-digest.bin"
	body := randomBytes(4096)
	wrong := md5.Sum([]byte("not the body"))
	_, err := c.Put(ctx, PutInput{Key: key, Body: body, MD5: wrong[:], PartSize: MinPartSize})
	if err == nil {
		_ = c.Delete(ctx, key)
		t.Fatal("Put with a wrong MD5 succeeded")
	}
	t.Logf("wrong MD5: %v", err)
	if !isCode(err, "BadDigest") || Classify(err) != fault.Transient {
		t.Errorf("Put with a wrong MD5: %v (kind %v), want BadDigest, transient", err, Classify(err))
	}
	if !strings.Contains(err.Error(), key) {
		t.Errorf("error %q does not name the key", err)
	}
	if _, err := c.Head(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Head after refused Put = %v, want ErrNotFound", err)
	}
}

func TestIntegrationMultipart(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	key := prefix + "multi.bin"
	body := randomBytes(11<<20 + 12345) // three parts of 5, 5 and 1+ MiB
	sum := md5.Sum(body)
	var progress int
	res := put(t, c, PutInput{Key: key, Body: body, MD5: sum[:], PartSize: MinPartSize, Progress: func() { progress++ }})
	if !res.Multipart || !strings.HasSuffix(res.ETag, "-3") {
		t.Errorf("PutResult %+v, want multipart with ETag ending -3", res)
	}
	if progress != 3 {
		t.Errorf("Progress called %d times, want 3 (once per part)", progress)
	}
	got, err := c.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("Get returned %d bytes that differ from the %d stored", len(got), len(body))
	}
	h, err := c.Head(ctx, key)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if !h.Multipart || h.Size != int64(len(body)) || h.ETag != res.ETag {
		t.Errorf("Head %+v, want multipart, size %d, ETag %s", h, len(body), res.ETag)
	}
	if err := h.Check(Want{Size: int64(len(body)), MD5: sum[:], CRC32C: CRC32C(body)}); err != nil {
		t.Errorf("Check: %v", err)
	}
	if h.CRC32C == "" || h.CRC32C != res.CRC32C {
		t.Errorf("Head CRC32C %q, Put %q, want the full object's %q", h.CRC32C, res.CRC32C, CRC32C(body))
	}
	other := md5.Sum(body[1:])
	var me *MismatchError
	if err := h.Matches(int64(len(body)), other[:]); !errors.As(err, &me) || me.Field != MD5Meta {
		t.Errorf("Matches with wrong md5 = %v, want %s mismatch", err, MD5Meta)
	}
}

func TestIntegrationOddKeys(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	for _, name := range []string{"with space", "plus+sign", "percent%20x", "eq=amp&", "ünïcødé-日本", "tilde~star*", "semi;colon,comma", "quote'paren()"} {
		t.Run(name, func(t *testing.T) {
			key := prefix + "odd/" + name
			body := []byte(name)
			sum := md5.Sum(body)
			put(t, c, PutInput{Key: key, Body: body, MD5: sum[:]})
			got, err := c.Get(ctx, key)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("Get %q = %q, %v", key, got, err)
			}
		})
	}
}

func TestIntegrationMissing(t *testing.T) {
	c, prefix := testClient(t)
	ctx := context.Background()
	key := prefix + "never-written"
	if _, err := c.Head(ctx, key); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), key) {
		t.Errorf("Head of a missing key = %v, want ErrNotFound naming the key", err)
	}
	if _, err := c.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing key = %v, want ErrNotFound", err)
	}
	if err := c.Delete(ctx, key); err != nil {
		t.Errorf("Delete of a missing key = %v, want nil", err)
	}
}

// A key over S3's 1,024 bytes is this object's fault. AWS answers KeyTooLongError; versitygw's posix
// backend does not check the total length (it stored a 1,141-byte key of short segments) but fails a
// path segment over 255 bytes: KeyTooLongError at 256, 409 ExistingObjectIsDirectory when far longer,
// as here. Both are Permanent.
func TestIntegrationKeyTooLong(t *testing.T) {
	c, prefix := testClient(t)
	key := prefix + strings.Repeat("k", 1025)
	body := []byte("x")
	sum := md5.Sum(body)
	_, err := c.Put(context.Background(), PutInput{Key: key, Body: body, MD5: sum[:]})
	if err == nil {
		_ = c.Delete(context.Background(), key)
		t.Fatal("Put of a 1025+ byte key succeeded")
	}
	t.Logf("key too long: %v", err)
	if Classify(err) != fault.Permanent {
		t.Errorf("Put of a too-long key: %v (kind %v), want permanent", err, Classify(err))
	}
}

func TestIntegrationWrongSecretIsFatal(t *testing.T) {
	testEnv(t)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
	ctx := context.Background()
	c, err := New(ctx, testDest(t, testBucket), 1)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = c.Check(ctx)
	t.Logf("check with wrong secret: %v", err)
	if err == nil || Classify(err) != fault.Fatal {
		t.Errorf("Check with a wrong secret: %v (kind %v), want fatal", err, Classify(err))
	}
	body := []byte("x")
	sum := md5.Sum(body)
	_, err = c.Put(ctx, PutInput{Key: "blobstore-it/wrong-secret", Body: body, MD5: sum[:]})
	t.Logf("put with wrong secret: %v", err)
	if err == nil || Classify(err) != fault.Fatal {
		t.Errorf("Put with a wrong secret: %v (kind %v), want fatal", err, Classify(err))
	}
}

func TestIntegrationMissingBucketIsFatal(t *testing.T) {
	testEnv(t)
	ctx := context.Background()
	c, err := New(ctx, testDest(t, fmt.Sprintf("ferry-missing-%d", time.Now().UnixNano())), 1)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = c.Check(ctx)
	t.Logf("check of missing bucket: %v", err)
	if !errors.Is(err, ErrNoBucket) || Classify(err) != fault.Fatal {
		t.Errorf("Check of a missing bucket: %v (kind %v), want ErrNoBucket, fatal", err, Classify(err))
	}
	body := []byte("x")
	sum := md5.Sum(body)
	_, err = c.Put(ctx, PutInput{Key: "k", Body: body, MD5: sum[:]})
	t.Logf("put to missing bucket: %v", err)
	if err == nil || Classify(err) != fault.Fatal {
		t.Errorf("Put to a missing bucket: %v (kind %v), want fatal", err, Classify(err))
	}
}

// TestIntegrationUnreachableIsOutage: a refused connection is an Outage (held, no run used), for
// Check, Head and Put alike.
func TestIntegrationUnreachableIsOutage(t *testing.T) {
	testEnv(t)
	ctx := context.Background()
	d := testDest(t, testBucket)
	d.Endpoint = "http://127.0.0.1:1" // nothing listens on port 1
	d.Timeout = 5 * time.Second
	c, err := New(ctx, d, 1)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Check(ctx); err == nil || fault.KindOf(err) != fault.Outage {
		t.Errorf("Check of an unreachable endpoint: %v (kind %v), want outage", err, fault.KindOf(err))
	}
	if _, err := c.Head(ctx, "k"); !IsUnreachable(err) || fault.KindOf(err) != fault.Outage {
		t.Errorf("Head at an unreachable endpoint: %v, want IsUnreachable, an outage", err)
	}
	body := []byte("x")
	sum := md5.Sum(body)
	if _, err := c.Put(ctx, PutInput{Key: "k", Body: body, MD5: sum[:]}); !IsUnreachable(err) || fault.KindOf(err) != fault.Outage {
		t.Errorf("Put at an unreachable endpoint: %v, want IsUnreachable, an outage", err)
	}
}
