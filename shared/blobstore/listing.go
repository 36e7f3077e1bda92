package blobstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// These calls take an explicit bucket: key lists and the listings `ferry diff` compares may live in
// another bucket than the job's destination.

// GetRange streams an object from byte offset on and returns its whole size. The body is read
// under ctx alone (a key list can take longer to read than one request's timeout); only the wait
// for the response headers is bounded. An offset at the end of the object gives an empty body; a
// missing object is ErrNotFound.
func (c *Client) GetRange(ctx context.Context, bucket, key string, offset int64) (io.ReadCloser, int64, error) {
	body, size, _, err := c.GetVersion(ctx, bucket, key, offset, "")
	return body, size, err
}

// GetVersion is GetRange that also returns the object's ETag (unquoted), which tells a key list's
// versions apart. With ifMatch set it reads only the version with that ETag: a replaced object is
// an error, not the other version's bytes.
func (c *Client) GetVersion(ctx context.Context, bucket, key string, offset int64, ifMatch string) (io.ReadCloser, int64, string, error) {
	if offset < 0 {
		return nil, 0, "", fmt.Errorf("get s3://%s/%s: negative offset %d", bucket, key, offset)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	if ifMatch != "" {
		in.IfMatch = aws.String(`"` + ifMatch + `"`)
	}
	out, err := c.s3.GetObject(ctx, in)
	if err != nil {
		switch statusOf(err) {
		case http.StatusNotFound:
			if !isCode(err, "NoSuchBucket") {
				return nil, 0, "", fmt.Errorf("get s3://%s/%s: %w", bucket, key, ErrNotFound)
			}
		case http.StatusPreconditionFailed:
			return nil, 0, "", fmt.Errorf("get s3://%s/%s: replaced while being read (its ETag is no longer %s)", bucket, key, ifMatch)
		case http.StatusRequestedRangeNotSatisfiable:
			// S3 refuses a range that starts at the end; a checkpoint there means "all read".
			size, etag, herr := c.Stat(ctx, bucket, key)
			if herr != nil {
				return nil, 0, "", herr
			}
			if ifMatch != "" && etag != ifMatch {
				return nil, 0, "", fmt.Errorf("get s3://%s/%s: replaced while being read (its ETag is no longer %s)", bucket, key, ifMatch)
			}
			if size == offset {
				return io.NopCloser(strings.NewReader("")), size, etag, nil
			}
			return nil, 0, "", fmt.Errorf("get s3://%s/%s: offset %d is past the end (%d bytes)", bucket, key, offset, size)
		}
		return nil, 0, "", fmt.Errorf("get s3://%s/%s: %w", bucket, key, err)
	}
	size := aws.ToInt64(out.ContentLength) + offset
	if cr := aws.ToString(out.ContentRange); cr != "" { // "bytes 100-199/200"
		if _, total, ok := strings.Cut(cr, "/"); ok {
			if n, err := strconv.ParseInt(total, 10, 64); err == nil {
				size = n
			}
		}
	} else if offset > 0 {
		// A server that ignores Range sends the whole object: never hand that out as the tail.
		out.Body.Close()
		return nil, 0, "", fmt.Errorf("get s3://%s/%s: the server ignored the range from byte %d", bucket, key, offset)
	}
	return out.Body, size, unquote(out.ETag), nil
}

// Stat HEADs an object in bucket: its size and ETag (unquoted).
func (c *Client) Stat(ctx context.Context, bucket, key string) (int64, string, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.HeadObject(rctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return 0, "", fmt.Errorf("head s3://%s/%s: %w", bucket, key, ErrNotFound)
		}
		return 0, "", fmt.Errorf("head s3://%s/%s: %w", bucket, key, err)
	}
	return aws.ToInt64(out.ContentLength), unquote(out.ETag), nil
}

// List calls fn for each object under prefix, in key order, until fn returns an error.
func (c *Client) List(ctx context.Context, bucket, prefix string, fn func(key string, size int64) error) error {
	return c.ListRange(ctx, bucket, prefix, "", "", fn)
}

// ListRange is List restricted to the keys k with after < k <= upTo (empty: no bound), so that
// several listers can share a prefix without gaps or overlaps.
func (c *Client) ListRange(ctx context.Context, bucket, prefix, after, upTo string, fn func(key string, size int64) error) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)}
	if after != "" {
		in.StartAfter = aws.String(after)
	}
	p := s3.NewListObjectsV2Paginator(c.s3, in)
	for p.HasMorePages() {
		rctx, cancel := c.reqCtx(ctx)
		page, err := p.NextPage(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if upTo != "" && k > upTo {
				return nil
			}
			if err := fn(k, aws.ToInt64(o.Size)); err != nil {
				return err
			}
		}
	}
	return nil
}

// CommonPrefixes is the first page (up to 1,000) of the "folders" right under prefix, split at
// delimiter: a cheap way to find where to split a listing among several listers.
func (c *Client) CommonPrefixes(ctx context.Context, bucket, prefix, delimiter string) ([]string, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.ListObjectsV2(rctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix),
		Delimiter: aws.String(delimiter)})
	if err != nil {
		return nil, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err)
	}
	ps := make([]string, 0, len(out.CommonPrefixes))
	for _, p := range out.CommonPrefixes {
		ps = append(ps, aws.ToString(p.Prefix))
	}
	return ps, nil
}
