// Package blobstore is ferry's S3 side: a client for one bucket that stores an object with its MD5
// checked by the server (single PUT or multipart), reads back what the verifier needs, and classifies
// S3 errors into transient, permanent (this object) and fatal (every object).
package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/fault"
)

const (
	// MinPartSize is S3's smallest part (all but the last).
	MinPartSize = 5 << 20
	// DefaultPartSize is used when PutInput.PartSize is 0.
	DefaultPartSize = 16 << 20
	// MD5Meta is the user-metadata key holding the whole object's MD5 in hex: a multipart ETag is
	// not the object's MD5, so the verifier checks this instead.
	MD5Meta = "ferry-md5"

	maxParts = 10000
	// sdkAttempts bounds the SDK's own retries. JetStream redelivery with backoff is ferry's outer
	// retry; a second attempt absorbs a dropped keep-alive connection or a single 503 cheaply, more
	// would only hold a worker (and the message's ack deadline) while S3 is struggling.
	sdkAttempts = 2
	// abortTimeout bounds AbortMultipartUpload, which runs on a fresh context because the caller's
	// may already be done; an upload left behind is cleaned by the bucket's lifecycle rule.
	abortTimeout = 30 * time.Second
)

// Client talks to one bucket.
type Client struct {
	s3           *s3.Client
	bucket       string
	storageClass string
	timeout      time.Duration
	sse          string // server-side encryption of new objects; empty: the bucket's default
	kmsKeyID     string // with sse aws:kms
	checksums    bool   // send a full-object CRC32C with every object (destination.checksum)
}

// New builds a client for d. Credentials come only from the standard AWS chain (environment, shared
// files, web identity, instance role); concurrency sizes the keep-alive pool so that every worker
// reuses a connection instead of paying a handshake per object. HTTPS trusts the system's CAs plus
// d.CABundle and AWS_CA_BUNDLE; a server certificate that does not verify is a Fatal error.
func New(ctx context.Context, d config.Destination, concurrency int) (*Client, error) {
	if concurrency < 1 {
		return nil, fmt.Errorf("s3 client for bucket %s: concurrency %d must be at least 1", d.Bucket, concurrency)
	}
	region := d.Region
	if region == "" {
		region = "us-east-1"
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	roots, err := rootCAs(d.CABundle)
	if err != nil {
		return nil, fmt.Errorf("s3 client for bucket %s: %w", d.Bucket, err)
	}
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(dl *net.Dialer) {
			dl.Timeout = 5 * time.Second
			dl.KeepAlive = 30 * time.Second
		}).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConns = concurrency * 2
			t.MaxIdleConnsPerHost = concurrency
			t.IdleConnTimeout = 90 * time.Second
			t.TLSHandshakeTimeout = 10 * time.Second
			// A stalled server must not hold a worker until the whole request timeout.
			t.ResponseHeaderTimeout = timeout
			t.ExpectContinueTimeout = time.Second
			if roots != nil {
				if t.TLSClientConfig == nil {
					t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				}
				t.TLSClientConfig.RootCAs = roots
			}
		})

	cfg, err := awsconfig.LoadDefaultConfig(ctx,
		awsconfig.WithRegion(region),
		awsconfig.WithHTTPClient(httpClient),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = sdkAttempts
				// No client-side retry quota: with JetStream backing off between deliveries the
				// quota would only turn an S3 hiccup into local "quota exceeded" failures.
				o.RateLimiter = ratelimit.None
			})
		}),
		// Content-MD5 (computed once by the fetcher) is the integrity check; a second, SDK-computed
		// CRC32 would cost a pass over every body and, on parts of an upload created without a
		// checksum algorithm, trips some S3-compatible servers.
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	)
	if err != nil {
		return nil, fmt.Errorf("s3 client for bucket %s: load aws config: %w", d.Bucket, err)
	}
	// Fail at start, not on the first object, when the chain has no credentials.
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("s3 client for bucket %s: no credentials in the AWS chain: %w", d.Bucket, err)
	}
	st := stateOf(d.Endpoint, d.Bucket)
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if d.Endpoint != "" {
			o.BaseEndpoint = aws.String(d.Endpoint)
		}
		o.UsePathStyle = d.PathStyle
		o.HTTPClient = trustHint{o.HTTPClient}
		// Latency, bytes and reachability of every operation (metrics.go).
		o.APIOptions = append(o.APIOptions, st.instrument)
	})
	return &Client{s3: client, bucket: d.Bucket, storageClass: d.StorageClass, timeout: timeout,
		sse: d.ServerSideEncryption, kmsKeyID: d.SSEKMSKeyID, checksums: d.Checksum != config.ChecksumOff}, nil
}

// rootCAs is the pool of CAs trusted for HTTPS: the system's plus the destination's ca_bundle and
// AWS_CA_BUNDLE; nil (Go's default, the system's) when neither is set. The SDK reads AWS_CA_BUNDLE
// too, but on its own it trusts that bundle alone; here it adds to the system's like ca_bundle.
func rootCAs(caBundle string) (*x509.CertPool, error) {
	env := os.Getenv("AWS_CA_BUNDLE")
	if caBundle == "" && env == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, b := range []struct{ path, name string }{{caBundle, "destination.ca_bundle"}, {env, "AWS_CA_BUNDLE"}} {
		if b.path == "" {
			continue
		}
		certs, err := config.LoadCABundle(b.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.name, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// trustHint makes a server certificate that does not verify a Fatal error that says what to fix:
// every request would fail the same way until the CA is configured.
type trustHint struct{ s3.HTTPClient }

func (h trustHint) Do(r *http.Request) (*http.Response, error) {
	resp, err := h.HTTPClient.Do(r)
	if err != nil {
		if hint := certHint(err); hint != "" {
			err = fault.Mark(fmt.Errorf("%w (%s)", err, hint), fault.Fatal)
		}
	}
	return resp, err
}

// certHint says what to check when err is a failed verification of the server's certificate.
func certHint(err error) string {
	var (
		host    x509.HostnameError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		verify  *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &host):
		return "the S3 server's certificate is not valid for this host: check destination.endpoint"
	case errors.As(err, &unknown):
		return "the S3 server's certificate is signed by a CA this process does not trust: set destination.ca_bundle (or AWS_CA_BUNDLE) to a PEM file of that CA"
	case errors.As(err, &invalid):
		return "the S3 server's certificate is invalid (expired or not for serving): check it, and destination.ca_bundle"
	case errors.As(err, &verify):
		return "the S3 server's certificate does not verify: check destination.ca_bundle (or AWS_CA_BUNDLE) and destination.endpoint"
	}
	return ""
}

// Bucket is the bucket this client writes to.
func (c *Client) Bucket() string { return c.bucket }

// reqCtx bounds one S3 request (SDK retries included) by the destination's timeout.
func (c *Client) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

func (c *Client) check(ctx context.Context) error {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	_, err := c.s3.HeadBucket(rctx, &s3.HeadBucketInput{Bucket: aws.String(c.bucket)})
	if err != nil {
		// HEAD responses have no body, so a missing bucket shows only as a bare 404.
		switch statusOf(err) {
		case http.StatusNotFound:
			return fmt.Errorf("check s3://%s: %w: %w", c.bucket, ErrNoBucket, err)
		case http.StatusForbidden: // no code either: a wrong secret looks like a denied policy
			return fmt.Errorf("check s3://%s: %w (access denied: check the credentials of the AWS chain, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the bucket's policy)", c.bucket, err)
		}
		return fmt.Errorf("check s3://%s: %w", c.bucket, err)
	}
	return nil
}

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
	if in.ContentType != "" {
		input.ContentType = aws.String(in.ContentType)
	}
	if class != "" {
		input.StorageClass = types.StorageClass(class)
	}
	if c.sse != "" {
		input.ServerSideEncryption = types.ServerSideEncryption(c.sse)
	}
	if c.kmsKeyID != "" {
		input.SSEKMSKeyId = aws.String(c.kmsKeyID)
	}
	if in.IfAbsent {
		input.IfNoneMatch = aws.String("*")
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
		if in.IfAbsent && statusOf(err) == http.StatusPreconditionFailed {
			return PutResult{}, fmt.Errorf("put s3://%s/%s: %w", c.bucket, in.Key, ErrExists)
		}
		return PutResult{}, fmt.Errorf("put s3://%s/%s: %w", c.bucket, in.Key, err)
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
	if in.ContentType != "" {
		create.ContentType = aws.String(in.ContentType)
	}
	if class != "" {
		create.StorageClass = types.StorageClass(class)
	}
	if c.sse != "" {
		create.ServerSideEncryption = types.ServerSideEncryption(c.sse)
	}
	if c.kmsKeyID != "" {
		create.SSEKMSKeyId = aws.String(c.kmsKeyID)
	}
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
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.CompleteMultipartUpload(rctx, complete)
	if err != nil {
		if in.IfAbsent && statusOf(err) == http.StatusPreconditionFailed {
			return "", "", fmt.Errorf("complete multipart upload: %w", ErrExists)
		}
		return "", "", fmt.Errorf("complete multipart upload: %w", err)
	}
	return unquote(out.ETag), crc, nil
}

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

func (c *Client) get(ctx context.Context, key string) ([]byte, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.GetObject(rctx, &s3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)})
	if err != nil {
		if statusOf(err) == http.StatusNotFound && !isCode(err, "NoSuchBucket") {
			return nil, fmt.Errorf("get s3://%s/%s: %w", c.bucket, key, ErrNotFound)
		}
		return nil, fmt.Errorf("get s3://%s/%s: %w", c.bucket, key, err)
	}
	defer out.Body.Close()
	buf := bytes.NewBuffer(make([]byte, 0, max(aws.ToInt64(out.ContentLength), 0)))
	if _, err := io.Copy(buf, out.Body); err != nil {
		return nil, fmt.Errorf("get s3://%s/%s: read body: %w", c.bucket, key, err)
	}
	return buf.Bytes(), nil
}

func (c *Client) del(ctx context.Context, key string) error {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	if _, err := c.s3.DeleteObject(rctx, &s3.DeleteObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("delete s3://%s/%s: %w", c.bucket, key, err)
	}
	return nil
}

func unquote(etag *string) string { return strings.Trim(aws.ToString(etag), `"`) }

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

func (c *Client) probeWrite(ctx context.Context, probeKey string) error {
	create := &s3.CreateMultipartUploadInput{Bucket: aws.String(c.bucket), Key: aws.String(probeKey)}
	if c.storageClass != "" {
		create.StorageClass = types.StorageClass(c.storageClass)
	}
	if c.sse != "" {
		create.ServerSideEncryption = types.ServerSideEncryption(c.sse)
	}
	if c.kmsKeyID != "" {
		create.SSEKMSKeyId = aws.String(c.kmsKeyID)
	}
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.CreateMultipartUpload(rctx, create)
	if err != nil {
		return fmt.Errorf("probe write s3://%s/%s: %w", c.bucket, probeKey, err)
	}
	if _, err := c.s3.AbortMultipartUpload(rctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(c.bucket), Key: aws.String(probeKey), UploadId: out.UploadId}); err != nil {
		return fmt.Errorf("probe write s3://%s/%s: abort: %w", c.bucket, probeKey, err)
	}
	return nil
}

// Check confirms the bucket exists and the credentials may use it.
// Its errors carry their fault.Kind (Classify).
func (c *Client) Check(ctx context.Context) error {
	return Mark(c.check(ctx))
}

// Put stores in.Body under in.Key. The server checks every byte against an MD5: the object's with a
// single PUT, each part's with multipart (where the whole MD5 is checked here before the first
// part). The whole MD5 is kept in the metadata MD5Meta either way.
// Its errors carry their fault.Kind (Classify).
func (c *Client) Put(ctx context.Context, in PutInput) (PutResult, error) {
	res, err := c.put(ctx, in)
	return res, Mark(err)
}

// Head reads an object's size, ETag, metadata and full-object CRC32C; a missing object is
// ErrNotFound.
// Its errors carry their fault.Kind (Classify).
func (c *Client) Head(ctx context.Context, key string) (HeadResult, error) {
	res, err := c.head(ctx, key)
	return res, Mark(err)
}

// Get reads a whole object (sampled deep verification, tests); a missing object is ErrNotFound.
// Its errors carry their fault.Kind (Classify).
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	res, err := c.get(ctx, key)
	return res, Mark(err)
}

// Delete removes an object; deleting a missing object is not an error (S3 semantics).
// Its errors carry their fault.Kind (Classify).
func (c *Client) Delete(ctx context.Context, key string) error {
	return Mark(c.del(ctx, key))
}

// ProbeWrite asks S3 whether these credentials may write to the bucket at all, without leaving an
// object behind: it starts a multipart upload under probeKey (authorized like a PUT, with this
// client's encryption and storage class) and aborts it. A refused object tells a refusal of that
// object (an object lock, a policy on its prefix) from one of every object by asking this.
// Its errors carry their fault.Kind (Classify).
func (c *Client) ProbeWrite(ctx context.Context, probeKey string) error {
	return Mark(c.probeWrite(ctx, probeKey))
}
