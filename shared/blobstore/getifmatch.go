package blobstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// GetIfMatch reads a whole object only if it still has the ETag etag (unquoted, as HeadResult
// gives it): the version a HEAD judged, not one that replaced it since. A replaced object is
// ErrChanged (S3's 412, or an answer of another ETag from a server that ignores If-Match on GET);
// a missing one ErrNotFound.
// Its errors carry their fault.Kind (Classify).
func (c *Client) GetIfMatch(ctx context.Context, key, etag string) ([]byte, error) {
	res, err := c.getIfMatch(ctx, key, etag)
	return res, Mark(err)
}

func (c *Client) getIfMatch(ctx context.Context, key, etag string) ([]byte, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.GetObject(rctx, &s3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key), IfMatch: ifMatch(etag)})
	if err != nil {
		switch {
		case statusOf(err) == http.StatusPreconditionFailed:
			return nil, fmt.Errorf("get s3://%s/%s: %w (it had ETag %s)", c.bucket, key, ErrChanged, etag)
		case statusOf(err) == http.StatusNotFound && !isCode(err, "NoSuchBucket"):
			return nil, fmt.Errorf("get s3://%s/%s: %w", c.bucket, key, ErrNotFound)
		}
		return nil, fmt.Errorf("get s3://%s/%s: %w", c.bucket, key, err)
	}
	defer out.Body.Close()
	if got := unquote(out.ETag); got != "" && got != etag {
		return nil, fmt.Errorf("get s3://%s/%s: %w (it had ETag %s, now %s)", c.bucket, key, ErrChanged, etag, got)
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(aws.ToInt64(out.ContentLength), 0)))
	if _, err := io.Copy(buf, out.Body); err != nil {
		return nil, fmt.Errorf("get s3://%s/%s: read body: %w", c.bucket, key, err)
	}
	return buf.Bytes(), nil
}
