package blobstore

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// HeadResult is what S3 says about a stored object.
type HeadResult struct {
	Key       string
	Size      int64
	ETag      string // unquoted
	Metadata  map[string]string
	Multipart bool // the ETag has a part count ("…-N"), so it is not the object's MD5
	// CRC32C is the whole object's CRC32C kept by S3 (base64); empty when the object has none or
	// only a composite of its parts' checksums.
	CRC32C string
	// WriteTime is the Cassandra writetime of the bytes held (WriteTimeMeta), microseconds since
	// the epoch; 0 when the object does not say.
	WriteTime int64
}

func (c *Client) head(ctx context.Context, key string) (HeadResult, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.HeadObject(rctx, &s3.HeadObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key),
		ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return HeadResult{}, fmt.Errorf("head s3://%s/%s: %w", c.bucket, key, ErrNotFound)
		}
		return HeadResult{}, fmt.Errorf("head s3://%s/%s: %w", c.bucket, key, err)
	}
	etag := unquote(out.ETag)
	h := HeadResult{
		Key:       key,
		Size:      aws.ToInt64(out.ContentLength),
		ETag:      etag,
		Metadata:  out.Metadata,
		Multipart: strings.Contains(etag, "-"),
		WriteTime: writeTimeOf(out.Metadata),
	}
	if crc := aws.ToString(out.ChecksumCRC32C); crc != "" && !strings.Contains(crc, "-") &&
		out.ChecksumType != types.ChecksumTypeComposite {
		h.CRC32C = crc
	}
	return h, nil
}

// Want is what a stored object must hold: its size, the MD5 of its source bytes, and (when known)
// their CRC32C.
type Want struct {
	Size   int64
	MD5    []byte
	CRC32C string // base64; empty: not known
}

// Matches reports whether the object holds size bytes with the given MD5; see Check.
func (h HeadResult) Matches(size int64, sum []byte) error {
	return h.Check(Want{Size: size, MD5: sum})
}

// Check reports whether the object holds what w describes. The result is nil or a *MismatchError.
//
// Every checksum the object carries must agree: S3's full-object CRC32C (when w knows the CRC32C
// too) and ferry's MD5 in the metadata MD5Meta. The ETag is compared only when neither is there,
// because it is the MD5 of the bytes only for a single PUT without SSE-KMS or SSE-C; an object
// with nothing to compare does not match.
func (h HeadResult) Check(w Want) error {
	if h.Size != w.Size {
		return &MismatchError{Key: h.Key, Field: "size", Want: fmt.Sprint(w.Size), Got: fmt.Sprint(h.Size)}
	}
	want := hex.EncodeToString(w.MD5)
	checked := false
	if w.CRC32C != "" && h.CRC32C != "" {
		if h.CRC32C != w.CRC32C {
			return &MismatchError{Key: h.Key, Field: "crc32c", Want: w.CRC32C, Got: h.CRC32C}
		}
		checked = true
	}
	if got := metaValue(h.Metadata, MD5Meta); got != "" {
		if !strings.EqualFold(got, want) {
			return &MismatchError{Key: h.Key, Field: MD5Meta, Want: want, Got: got}
		}
		checked = true
	}
	switch {
	case checked:
		return nil
	case h.Multipart:
		return &MismatchError{Key: h.Key, Field: MD5Meta, Want: want}
	case !strings.EqualFold(h.ETag, want):
		return &MismatchError{Key: h.Key, Field: "etag", Want: want, Got: h.ETag}
	}
	return nil
}

// metaValue looks a metadata key up case-insensitively: servers and SDK versions differ in how they
// case x-amz-meta-* names.
func metaValue(m map[string]string, key string) string {
	if v, ok := m[key]; ok {
		return v
	}
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}
