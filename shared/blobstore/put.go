package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ferry-migrate/ferry/shared/fault"
)

const (
	// MinPartSize is S3's smallest part (all but the last).
	MinPartSize = 5 << 20
	// DefaultPartSize is used when PutInput.PartSize is 0.
	DefaultPartSize = 16 << 20

	maxParts = 10000
	// abortTimeout bounds AbortMultipartUpload, which runs on a fresh context because the caller's
	// may already be done; an upload left behind is cleaned by the bucket's lifecycle rule.
	abortTimeout = 30 * time.Second
)

// PutInput is one object to store.
type PutInput struct {
	Key          string
	Body         []byte
	MD5          []byte // 16 bytes, of Body, computed by the caller
	ContentType  string // empty: the server's default
	Metadata     map[string]string
	StorageClass string // empty: the destination's, else the bucket's default
	// PartSize is both the multipart threshold and the part size; at least MinPartSize, 0 means
	// DefaultPartSize. It grows when Body would need more than 10,000 parts.
	PartSize int64
	// IfAbsent makes the write conditional (If-None-Match: * on the single PUT and on
	// CompleteMultipartUpload): an existing object is left alone and Put returns ErrExists. Servers
	// that ignore the header overwrite as an unconditional write would.
	IfAbsent bool
	// IfMatch, when set, is the ETag (unquoted, as HeadResult gives it) the object must still have
	// for the write to replace it (If-Match on the single PUT and on CompleteMultipartUpload): an
	// object that changed or went since it was read is left alone and Put returns ErrChanged, so
	// two writers that read the same object cannot both replace it. Not with IfAbsent.
	IfMatch string
	// Progress, if set, is called after each part so that the caller can extend its message's ack
	// deadline during a long upload.
	Progress func()
	// CRC32C is the CRC32C of the source bytes (base64, see CRC32C), computed where they were
	// read, so that S3 checks the bytes end to end; empty: computed here from Body.
	CRC32C string
}

// PutResult is what S3 answered.
type PutResult struct {
	ETag      string // unquoted
	Multipart bool
	// CRC32C is the whole object's CRC32C (base64, as S3 writes it) that S3 checked the bytes
	// against and keeps with the object; empty when the destination has checksums off.
	CRC32C string
}

// ErrChanged is an object that a conditional Put (IfMatch) found changed or gone since its ETag
// was read: nothing was written, and whoever decided to replace it must look again.
var ErrChanged = errors.New("object changed since it was read")

// ifMatch is the If-Match header value for an unquoted ETag.
func ifMatch(etag string) *string { return aws.String(`"` + etag + `"`) }

// refusedPrecondition turns a failed conditional write into ErrExists or ErrChanged; other errors
// are returned as they are. Under If-Match, S3 answers 412 for another ETag, 404 for an object
// gone since, and 409 ConditionalRequestConflict for a write racing this one: all mean "changed".
func refusedPrecondition(in PutInput, err error) error {
	status := statusOf(err)
	switch {
	case in.IfAbsent && status == http.StatusPreconditionFailed:
		return ErrExists
	case in.IfMatch != "" && (status == http.StatusPreconditionFailed || status == http.StatusConflict ||
		isCode(err, "NoSuchKey") || isCode(err, "ConditionalRequestConflict")):
		return fmt.Errorf("%w (it had ETag %s): %w", ErrChanged, in.IfMatch, err)
	}
	return err
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is the base64 form S3 uses for the CRC32C of b.
func CRC32C(b []byte) string {
	return crcString(crc32.Checksum(b, castagnoli))
}

// CRC32COf is the base64 form of a CRC32C value.
func CRC32COf(c uint32) string { return crcString(c) }

func crcString(c uint32) string {
	return base64.StdEncoding.EncodeToString([]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)})
}

func (c *Client) put(ctx context.Context, in PutInput) (PutResult, error) {
	if len(in.MD5) != md5.Size {
		return PutResult{}, fmt.Errorf("put s3://%s/%s: %w", c.bucket, in.Key,
			fault.Mark(fmt.Errorf("md5 is %d bytes, want %d", len(in.MD5), md5.Size), fault.Permanent))
	}
	if in.IfAbsent && in.IfMatch != "" {
		return PutResult{}, fmt.Errorf("put s3://%s/%s: %w", c.bucket, in.Key,
			fault.Mark(errors.New("IfAbsent and IfMatch together: the object cannot be both absent and present"), fault.Permanent))
	}
	partSize := in.PartSize
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < MinPartSize {
		// A configuration mistake: every large object would fail the same way.
		return PutResult{}, fmt.Errorf("put s3://%s/%s: %w", c.bucket, in.Key,
			fault.Mark(fmt.Errorf("part size %d is below the S3 minimum %d", partSize, MinPartSize), fault.Fatal))
	}
	meta := make(map[string]string, len(in.Metadata)+1)
	for k, v := range in.Metadata {
		meta[k] = v
	}
	meta[MD5Meta] = hex.EncodeToString(in.MD5)
	class := in.StorageClass
	if class == "" {
		class = c.storageClass
	}
	if int64(len(in.Body)) <= partSize {
		return c.putSingle(ctx, in, meta, class)
	}
	if n := (int64(len(in.Body)) + maxParts - 1) / maxParts; n > partSize {
		partSize = n
	}
	return c.putMultipart(ctx, in, meta, class, partSize)
}

func (c *Client) putSingle(ctx context.Context, in PutInput, meta map[string]string, class string) (PutResult, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	input := &s3.PutObjectInput{
		Bucket:        aws.String(c.bucket),
		Key:           aws.String(in.Key),
		Body:          bytes.NewReader(in.Body), // seekable: the SDK can resend it on retry
		ContentLength: aws.Int64(int64(len(in.Body))),
		ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(in.MD5)),
		Metadata:      meta,
	}
	c.objectOptions(in.ContentType, class).setPut(input)
	if in.IfAbsent {
		input.IfNoneMatch = aws.String("*")
	}
	if in.IfMatch != "" {
		input.IfMatch = ifMatch(in.IfMatch)
	}
	var crc string
	if c.checksums {
		crc = in.CRC32C
		if crc == "" {
			crc = CRC32C(in.Body)
		}
		input.ChecksumCRC32C = aws.String(crc)
	}
	out, err := c.s3.PutObject(rctx, input)
	if err != nil {
		return PutResult{}, fmt.Errorf("put s3://%s/%s: %w", c.bucket, in.Key, refusedPrecondition(in, err))
	}
	return PutResult{ETag: unquote(out.ETag), CRC32C: crc}, nil
}

func (c *Client) putMultipart(ctx context.Context, in PutInput, meta map[string]string, class string, partSize int64) (PutResult, error) {
	// S3 checks only the parts; a whole MD5 that disagrees with the body would otherwise be
	// stored in MD5Meta and later "verified" against itself.
	if sum := md5.Sum(in.Body); !bytes.Equal(sum[:], in.MD5) {
		return PutResult{}, fmt.Errorf("put s3://%s/%s: %w (body %x, given %x)", c.bucket, in.Key, ErrBadDigest, sum, in.MD5)
	}
	create := &s3.CreateMultipartUploadInput{
		Bucket:   aws.String(c.bucket),
		Key:      aws.String(in.Key),
		Metadata: meta,
	}
	c.objectOptions(in.ContentType, class).setCreate(create)
	if c.checksums {
		// A full-object CRC32C (not a composite of the parts) so that HEAD reports the same
		// checksum for any part size, and the verifier can compare it with the source's.
		create.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32c
		create.ChecksumType = types.ChecksumTypeFullObject
	}
	rctx, cancel := c.reqCtx(ctx)
	created, err := c.s3.CreateMultipartUpload(rctx, create)
	cancel()
	if err != nil {
		return PutResult{}, fmt.Errorf("put s3://%s/%s: create multipart upload: %w", c.bucket, in.Key, err)
	}
	uploadID := created.UploadId

	etag, crc, err := c.uploadParts(ctx, in, uploadID, partSize)
	if err != nil {
		actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer acancel()
		_, aerr := c.s3.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(c.bucket), Key: aws.String(in.Key), UploadId: uploadID,
		})
		if aerr != nil {
			err = errors.Join(err, fmt.Errorf("abort multipart upload %s: %w", aws.ToString(uploadID), aerr))
		}
		return PutResult{}, fmt.Errorf("put s3://%s/%s: %w", c.bucket, in.Key, err)
	}
	return PutResult{ETag: etag, Multipart: true, CRC32C: crc}, nil
}

// uploadParts sends the parts in order and completes the upload; the caller aborts on error.
// Parts go one at a time: ferry's parallelism is across objects, one worker per object.
func (c *Client) uploadParts(ctx context.Context, in PutInput, uploadID *string, partSize int64) (etag, crc string, err error) {
	var parts []types.CompletedPart
	var whole uint32
	for off, n := int64(0), int32(1); off < int64(len(in.Body)); off, n = off+partSize, n+1 {
		part := in.Body[off:min(off+partSize, int64(len(in.Body)))]
		sum := md5.Sum(part)
		input := &s3.UploadPartInput{
			Bucket:        aws.String(c.bucket),
			Key:           aws.String(in.Key),
			UploadId:      uploadID,
			PartNumber:    aws.Int32(n),
			Body:          bytes.NewReader(part),
			ContentLength: aws.Int64(int64(len(part))),
			ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		}
		completed := types.CompletedPart{PartNumber: aws.Int32(n)}
		if c.checksums {
			input.ChecksumCRC32C = aws.String(CRC32C(part))
			completed.ChecksumCRC32C = input.ChecksumCRC32C
			whole = crc32.Update(whole, castagnoli, part)
		}
		rctx, cancel := c.reqCtx(ctx)
		out, err := c.s3.UploadPart(rctx, input)
		cancel()
		if err != nil {
			return "", "", fmt.Errorf("upload part %d: %w", n, err)
		}
		completed.ETag = out.ETag
		parts = append(parts, completed)
		if in.Progress != nil {
			in.Progress()
		}
	}
	complete := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(c.bucket),
		Key:             aws.String(in.Key),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		MpuObjectSize:   aws.Int64(int64(len(in.Body))),
	}
	if c.checksums {
		crc = crcString(whole)
		if in.CRC32C != "" && in.CRC32C != crc {
			return "", "", fmt.Errorf("%w (crc32c of the body %s, of the source %s)", ErrBadDigest, crc, in.CRC32C)
		}
		complete.ChecksumCRC32C = aws.String(crc)
		complete.ChecksumType = types.ChecksumTypeFullObject
	}
	if in.IfAbsent {
		// The condition is checked when the object would appear: an object another key completed
		// meanwhile is refused here like on a single PUT.
		complete.IfNoneMatch = aws.String("*")
	}
	if in.IfMatch != "" {
		// Likewise checked when the new bytes would replace the object, not when the upload began.
		complete.IfMatch = ifMatch(in.IfMatch)
	}
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.CompleteMultipartUpload(rctx, complete)
	if err != nil {
		return "", "", fmt.Errorf("complete multipart upload: %w", refusedPrecondition(in, err))
	}
	return unquote(out.ETag), crc, nil
}
