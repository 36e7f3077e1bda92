package blobstore

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestObjectOptions: what is set reaches the request; what is empty stays unset, so the server's
// and the bucket's defaults apply.
func TestObjectOptions(t *testing.T) {
	o := (&Client{sse: "aws:kms", kmsKeyID: "key-1"}).objectOptions("image/png", "STANDARD_IA")
	if aws.ToString(o.contentType) != "image/png" || o.storageClass != "STANDARD_IA" || o.sse != "aws:kms" || aws.ToString(o.kmsKeyID) != "key-1" {
		t.Errorf("options = %+v", o)
	}
	var put s3.PutObjectInput
	var create s3.CreateMultipartUploadInput
	o.setPut(&put)
	o.setCreate(&create)
	if aws.ToString(put.ContentType) != "image/png" || put.StorageClass != "STANDARD_IA" || put.ServerSideEncryption != "aws:kms" || aws.ToString(put.SSEKMSKeyId) != "key-1" {
		t.Errorf("single PUT got %+v", put)
	}
	if aws.ToString(create.ContentType) != "image/png" || create.StorageClass != "STANDARD_IA" || create.ServerSideEncryption != "aws:kms" || aws.ToString(create.SSEKMSKeyId) != "key-1" {
		t.Errorf("multipart upload got %+v", create)
	}
	if o := (&Client{}).objectOptions("", ""); o != (objectOptions{}) {
		t.Errorf("options of nothing set = %+v, want none", o)
	}
}
