package blobstore

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// objectOptions are the settings a new object gets whichever way it is written (a single PUT, a
// multipart upload) and that the write probe asks for: its content type, storage class and
// server-side encryption. The zero values leave the server's or bucket's defaults.
type objectOptions struct {
	contentType  *string
	storageClass types.StorageClass
	sse          types.ServerSideEncryption
	kmsKeyID     *string
}

// objectOptions are the settings of an object of contentType (empty: the server's default) in
// storage class class (empty: the bucket's default), encrypted as this client's destination says.
func (c *Client) objectOptions(contentType, class string) objectOptions {
	o := objectOptions{storageClass: types.StorageClass(class), sse: types.ServerSideEncryption(c.sse)}
	if contentType != "" {
		o.contentType = aws.String(contentType)
	}
	if c.kmsKeyID != "" {
		o.kmsKeyID = aws.String(c.kmsKeyID)
	}
	return o
}

// setPut sets o on a single PUT.
func (o objectOptions) setPut(in *s3.PutObjectInput) {
	in.ContentType, in.StorageClass, in.ServerSideEncryption, in.SSEKMSKeyId = o.contentType, o.storageClass, o.sse, o.kmsKeyID
}

// setCreate sets o on the start of a multipart upload.
func (o objectOptions) setCreate(in *s3.CreateMultipartUploadInput) {
	in.ContentType, in.StorageClass, in.ServerSideEncryption, in.SSEKMSKeyId = o.contentType, o.storageClass, o.sse, o.kmsKeyID
}
