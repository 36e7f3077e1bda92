package blobstore

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
// fails instead of moving the new bytes. It never replaces an object at dst: one already there
// is ErrExists, from a HEAD first (servers such as versitygw v1.8.0 ignore If-None-Match on a
// copy) and from If-None-Match: * on the copy (a dst written between the two, where honoured).
// Its errors carry their fault.Kind (Classify).
func (c *Client) Copy(ctx context.Context, src, dst, etag string) error {
	switch _, err := c.Inspect(ctx, dst); {
	case err == nil:
		return Mark(fmt.Errorf("copy s3://%s/%s to %s: %w", c.bucket, src, dst, ErrExists))
	case !errors.Is(err, ErrNotFound):
		return Mark(fmt.Errorf("copy s3://%s/%s to %s: %w", c.bucket, src, dst, err))
	}
	in := &s3.CopyObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(dst),
		CopySource:        aws.String(url.PathEscape(c.bucket) + "/" + escapePath(src)),
		MetadataDirective: types.MetadataDirectiveCopy, IfNoneMatch: aws.String("*")}
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
			// Either condition: the source is no longer etag, or dst appeared.
			return Mark(fmt.Errorf("copy s3://%s/%s to %s: the source was replaced since it was read (its ETag is no longer %s) or the destination exists: %w", c.bucket, src, dst, etag, ErrChanged))
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

// DeleteIf deletes key only while its ETag is etag (If-Match): an object replaced since it was
// read (a new upload of a live key) is left alone and DeleteIf returns ErrChanged; one already
// gone is ErrNotFound where the server says so (AWS answers 404 to a conditional delete of a
// missing key). An empty etag deletes unconditionally. Servers that ignore If-Match on DELETE
// delete unconditionally: versitygw v1.8.0 honours it.
// Its errors carry their fault.Kind (Classify).
func (c *Client) DeleteIf(ctx context.Context, key, etag string) error {
	in := &s3.DeleteObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)}
	if etag != "" {
		in.IfMatch = ifMatch(etag)
	}
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	_, err := c.s3.DeleteObject(rctx, in)
	switch {
	case err == nil:
		return nil
	case etag != "" && (statusOf(err) == http.StatusPreconditionFailed || statusOf(err) == http.StatusConflict ||
		isCode(err, "ConditionalRequestConflict")):
		return Mark(fmt.Errorf("delete s3://%s/%s: %w (it had ETag %s): %w", c.bucket, key, ErrChanged, etag, err))
	case statusOf(err) == http.StatusNotFound:
		return Mark(fmt.Errorf("delete s3://%s/%s: %w", c.bucket, key, ErrNotFound))
	}
	return Mark(fmt.Errorf("delete s3://%s/%s: %w", c.bucket, key, err))
}

// MarkerPrefix is where Clock writes its marker objects.
const MarkerPrefix = ".ferry-prune/"

// Clock reads the bucket's own clock: it writes a small marker object under MarkerPrefix (a
// name of its own, If-None-Match: *, so it replaces nothing), reads its LastModified, and
// deletes it (If-Match). The time is whole seconds, as S3 keeps them. Use it where S3's times are
// compared with a time of this host's: the two clocks may differ by minutes.
// Its errors carry their fault.Kind (Classify).
func (c *Client) Clock(ctx context.Context) (time.Time, error) {
	var r [8]byte
	_, _ = rand.Read(r[:])
	key := fmt.Sprintf("%s%d-%s", MarkerPrefix, time.Now().UnixNano(), hex.EncodeToString(r[:]))
	body := []byte("ferry prune: the bucket's clock\n")
	sum := md5.Sum(body)
	res, err := c.Put(ctx, PutInput{Key: key, Body: body, MD5: sum[:], IfAbsent: true})
	if err != nil {
		return time.Time{}, fmt.Errorf("read the bucket's clock: %w", err)
	}
	info, err := c.Inspect(ctx, key)
	if derr := c.DeleteIf(context.WithoutCancel(ctx), key, res.ETag); derr != nil && !errors.Is(derr, ErrNotFound) {
		err = errors.Join(err, fmt.Errorf("remove the clock marker: %w", derr))
	}
	if err != nil {
		return time.Time{}, Mark(fmt.Errorf("read the bucket's clock: %w", err))
	}
	return info.LastModified, nil
}
