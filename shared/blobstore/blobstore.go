// Package blobstore is ferry's S3 side: a client for one bucket that stores an object with its MD5
// checked by the server (single PUT or multipart), reads back what the verifier needs, and classifies
// S3 errors into transient, permanent (this object) and fatal (every object).
package blobstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferry-migrate/ferry/shared/config"
)

const (
	// MD5Meta is the user-metadata key holding the whole object's MD5 in hex: a multipart ETag is
	// not the object's MD5, so the verifier checks this instead.
	MD5Meta = "ferry-md5"

	// sdkAttempts bounds the SDK's own retries. JetStream redelivery with backoff is ferry's outer
	// retry; a second attempt absorbs a dropped keep-alive connection or a single 503 cheaply, more
	// would only hold a worker (and the message's ack deadline) while S3 is struggling.
	sdkAttempts = 2
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
	if r := d.Plaintext(); r != "" {
		config.WarnPlaintext(r) // warn, not refuse: see shared/config/plaintext.go
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

func (c *Client) probeWrite(ctx context.Context, probeKey string) error {
	create := &s3.CreateMultipartUploadInput{Bucket: aws.String(c.bucket), Key: aws.String(probeKey)}
	c.objectOptions("", c.storageClass).setCreate(create)
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
