package blobstore

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// What `ferry prune` needs of the bucket: a listing with each object's time, a HEAD that says
// when the object was last written and for which key, a server-side copy (quarantine) and a
// delete. They act on the client's own bucket.

// Object is one listed object.
type Object struct {
	Key          string
	Size         int64
	LastModified time.Time
}

// ListObjects calls fn for each object k under prefix with after < k <= upTo (empty: no bound),
// in key order, with its size and last-modified time.
func (c *Client) ListObjects(ctx context.Context, prefix, after, upTo string, fn func(Object) error) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket), Prefix: aws.String(prefix)}
	if after != "" {
		in.StartAfter = aws.String(after)
	}
	p := s3.NewListObjectsV2Paginator(c.s3, in)
	for p.HasMorePages() {
		rctx, cancel := c.reqCtx(ctx)
		page, err := p.NextPage(rctx)
		cancel()
		if err != nil {
			return Mark(fmt.Errorf("list s3://%s/%s: %w", c.bucket, prefix, err))
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if upTo != "" && k > upTo {
				return nil
			}
			if err := fn(Object{Key: k, Size: aws.ToInt64(o.Size), LastModified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Info is what a HEAD says about an object before prune acts on it.
type Info struct {
	Key          string
	Size         int64
	ETag         string // unquoted
	LastModified time.Time
	Metadata     map[string]string
}

// Meta is the metadata value of key, looked up case-insensitively.
func (i Info) Meta(key string) string { return metaValue(i.Metadata, key) }

// Owner is the source key the object's owner record names, "" when it has none (not written by
// ferry, or by an older ferry whose record is ambiguous).
func (i Info) Owner() string {
	if v := i.Meta(OwnerMeta); v != "" {
		if u, err := url.PathUnescape(v); err == nil && strings.Contains(v, "%") {
			return u
		}
		return v
	}
	return i.Meta(LegacyOwnerMeta)
}

// Inspect HEADs an object; a missing object is ErrNotFound.
// Its errors carry their fault.Kind (Classify).
func (c *Client) Inspect(ctx context.Context, key string) (Info, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	out, err := c.s3.HeadObject(rctx, &s3.HeadObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)})
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return Info{}, Mark(fmt.Errorf("head s3://%s/%s: %w", c.bucket, key, ErrNotFound))
		}
		return Info{}, Mark(fmt.Errorf("head s3://%s/%s: %w", c.bucket, key, err))
	}
	return Info{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: unquote(out.ETag),
		LastModified: aws.ToTime(out.LastModified), Metadata: out.Metadata}, nil
}

// Copy copies object src to dst in the bucket, server side, with its metadata, and only the
// version whose ETag is etag (empty: whichever is there): a copy of an object replaced meanwhile
// fails instead of moving the new bytes.
// Its errors carry their fault.Kind (Classify).
func (c *Client) Copy(ctx context.Context, src, dst, etag string) error {
	in := &s3.CopyObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(dst),
		CopySource:        aws.String(url.PathEscape(c.bucket) + "/" + escapePath(src)),
		MetadataDirective: types.MetadataDirectiveCopy}
	if etag != "" {
		in.CopySourceIfMatch = aws.String(`"` + etag + `"`)
	}
	if c.storageClass != "" {
		in.StorageClass = types.StorageClass(c.storageClass)
	}
	switch c.sse {
	case "AES256":
		in.ServerSideEncryption = types.ServerSideEncryptionAes256
	case "aws:kms":
		in.ServerSideEncryption = types.ServerSideEncryptionAwsKms
		if c.kmsKeyID != "" {
			in.SSEKMSKeyId = aws.String(c.kmsKeyID)
		}
	}
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	if _, err := c.s3.CopyObject(rctx, in); err != nil {
		if statusOf(err) == http.StatusPreconditionFailed {
			return Mark(fmt.Errorf("copy s3://%s/%s to %s: replaced since it was read (its ETag is no longer %s)", c.bucket, src, dst, etag))
		}
		return Mark(fmt.Errorf("copy s3://%s/%s to %s: %w", c.bucket, src, dst, err))
	}
	return nil
}

// escapePath percent-escapes each segment of an object key for the x-amz-copy-source header,
// keeping the slashes.
func escapePath(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
