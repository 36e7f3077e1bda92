package blobstore

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ferry-migrate/ferry/shared/fault"
)

// opErr builds an error shaped as the SDK returns it: operation → response (status) → API error.
func opErr(status int, apiErr error) error {
	return &smithy.OperationError{
		ServiceID:     "S3",
		OperationName: "PutObject",
		Err: &awshttp.ResponseError{
			RequestID: "req-1",
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
				Err:      apiErr,
			},
		},
	}
}

func code(c, msg string) error { return &smithy.GenericAPIError{Code: c, Message: msg} }

// sendErr is a failure before any response, as the SDK wraps it.
func sendErr(err error) error {
	return &smithy.OperationError{ServiceID: "S3", OperationName: "PutObject",
		Err: &retry.MaxAttemptsError{Attempt: 2, Err: &smithyhttp.RequestSendError{Err: err}}}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want fault.Kind
	}{
		{"slow down", opErr(503, code("SlowDown", "reduce your request rate")), fault.Outage},
		{"request timeout", opErr(400, code("RequestTimeout", "")), fault.Transient},
		{"internal error", opErr(500, code("InternalError", "")), fault.Transient},
		{"bare 503", opErr(503, code("ServiceUnavailable", "")), fault.Outage},
		{"unknown 502", opErr(502, code("BadGateway", "")), fault.Outage},
		{"throttling", opErr(400, code("Throttling", "")), fault.Outage},
		{"429 without code", opErr(429, code("", "")), fault.Outage},
		{"bad digest", opErr(400, code("BadDigest", "The Content-MD5 you specified did not match")), fault.Transient},
		{"sha256 mismatch", opErr(400, code("XAmzContentSHA256Mismatch", "")), fault.Transient},
		{"no such upload", opErr(404, code("NoSuchUpload", "")), fault.Transient},
		{"connection refused", sendErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), fault.Outage},
		{"connection reset", sendErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), fault.Outage},
		{"unexpected eof", sendErr(io.ErrUnexpectedEOF), fault.Outage},
		{"request deadline", sendErr(fmt.Errorf("wrapped: %w", context.DeadlineExceeded)), fault.Transient},
		{"canceled", &smithy.CanceledError{Err: context.Canceled}, fault.Transient},
		{"unknown error", errors.New("something odd"), fault.Transient},
		{"unknown code 400", opErr(400, code("SomethingNew", "")), fault.Transient},
		{"bad digest here", fmt.Errorf("put s3://b/k: %w", ErrBadDigest), fault.Transient},

		{"access denied", opErr(403, code("AccessDenied", "Access Denied")), fault.Fatal},
		{"invalid access key", opErr(403, code("InvalidAccessKeyId", "")), fault.Fatal},
		{"signature", opErr(403, code("SignatureDoesNotMatch", "")), fault.Fatal},
		{"no such bucket", opErr(404, &types.NoSuchBucket{Message: aws.String("gone")}), fault.Fatal},
		{"all access disabled", opErr(403, code("AllAccessDisabled", "")), fault.Fatal},
		{"expired token", opErr(400, code("ExpiredToken", "")), fault.Fatal},
		{"HEAD 403 without code", opErr(403, code("Forbidden", "")), fault.Fatal},
		{"HEAD 301 wrong region", opErr(301, code("MovedPermanently", "")), fault.Fatal},
		{"check: no bucket", fmt.Errorf("check s3://b: %w: %w", ErrNoBucket, opErr(404, code("NotFound", ""))), fault.Fatal},
		{"server CA not trusted", sendErr(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), fault.Fatal},
		{"certificate for another host", sendErr(&tls.CertificateVerificationError{Err: x509.HostnameError{Host: "s3.example"}}), fault.Fatal},
		{"certificate expired", sendErr(x509.CertificateInvalidError{Reason: x509.Expired}), fault.Fatal},
		{"part size config", fault.Mark(errors.New("part size"), fault.Fatal), fault.Fatal},

		{"entity too large", opErr(400, code("EntityTooLarge", "")), fault.Permanent},
		{"key too long", opErr(400, code("KeyTooLongError", "Your key is too long")), fault.Permanent},
		{"invalid object name", opErr(400, code("InvalidObjectName", "")), fault.Permanent},
		{"invalid argument about key", opErr(400, code("InvalidArgument", "Object key is not valid")), fault.Permanent},
		{"invalid argument other", opErr(400, code("InvalidArgument", "x-amz-tagging is bad")), fault.Transient},
		{"versitygw parent is file", opErr(409, code("ObjectParentIsFile", "")), fault.Permanent},
		{"missing object", fmt.Errorf("head s3://b/k: %w", ErrNotFound), fault.Permanent},
		{"bad md5 length", fault.Mark(errors.New("md5 is 3 bytes"), fault.Permanent), fault.Permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
			// Wrapping with context, as callers do, must not change the kind.
			if got := Classify(fmt.Errorf("upload k: %w", tt.err)); got != tt.want {
				t.Errorf("Classify(wrapped %v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	body := []byte("hello ferry")
	sum := md5.Sum(body)
	hexSum := fmt.Sprintf("%x", sum)
	other := md5.Sum([]byte("other"))
	crc, otherCRC := CRC32C(body), CRC32C([]byte("other"))
	random := "5f1d2c0a9b8e7d6c5b4a39281706f5e4" // an SSE-KMS or SSE-C ETag: not the MD5
	meta := map[string]string{MD5Meta: hexSum}
	tests := []struct {
		name  string
		head  HeadResult
		crc   string // the CRC32C the caller knows; "" = none
		field string // "" = match
	}{
		{"random etag, metadata", HeadResult{Size: 11, ETag: random, Metadata: meta}, "", ""},
		{"random etag, crc32c and metadata", HeadResult{Size: 11, ETag: random, Metadata: meta, CRC32C: crc}, crc, ""},
		{"random etag, crc32c only", HeadResult{Size: 11, ETag: random, CRC32C: crc}, crc, ""},
		{"crc32c differs", HeadResult{Size: 11, ETag: hexSum, Metadata: meta, CRC32C: otherCRC}, crc, "crc32c"},
		{"crc32c agrees, metadata differs", HeadResult{Size: 11, ETag: hexSum, CRC32C: crc, Metadata: map[string]string{MD5Meta: fmt.Sprintf("%x", other)}}, crc, MD5Meta},
		{"crc32c unknown to the caller, metadata decides", HeadResult{Size: 11, ETag: random, CRC32C: otherCRC, Metadata: meta}, "", ""},
		{"random etag, nothing else", HeadResult{Size: 11, ETag: random}, "", "etag"},
		{"single part", HeadResult{Size: 11, ETag: hexSum}, "", ""},
		{"single part upper-case etag", HeadResult{Size: 11, ETag: fmt.Sprintf("%X", sum)}, "", ""},
		{"size differs", HeadResult{Size: 10, ETag: hexSum}, "", "size"},
		{"etag differs", HeadResult{Size: 11, ETag: fmt.Sprintf("%x", other)}, "", "etag"},
		{"multipart via metadata", HeadResult{Size: 11, ETag: "abc-2", Multipart: true, Metadata: map[string]string{MD5Meta: hexSum}}, "", ""},
		{"multipart metadata case", HeadResult{Size: 11, ETag: "abc-2", Multipart: true, Metadata: map[string]string{"Ferry-Md5": hexSum}}, "", ""},
		{"multipart metadata differs", HeadResult{Size: 11, ETag: "abc-2", Multipart: true, Metadata: map[string]string{MD5Meta: fmt.Sprintf("%x", other)}}, "", MD5Meta},
		{"multipart without metadata", HeadResult{Size: 11, ETag: "abc-2", Multipart: true}, "", MD5Meta},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.head.Key = "k"
			err := tt.head.Check(Want{Size: int64(len(body)), MD5: sum[:], CRC32C: tt.crc})
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Matches: %v", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("Matches = %v, want *MismatchError", err)
			}
			if me.Field != tt.field || me.Key != "k" {
				t.Errorf("mismatch %+v, want field %s", me, tt.field)
			}
		})
	}
}

// Input checks happen before any request, so a zero Client is enough.
func TestPutRejectsBadInput(t *testing.T) {
	c := &Client{bucket: "b"}
	ctx := context.Background()
	big := make([]byte, MinPartSize+1)
	sum := md5.Sum(big)
	wrong := md5.Sum([]byte("x"))

	_, err := c.Put(ctx, PutInput{Key: "k", Body: []byte("x"), MD5: []byte{1, 2, 3}})
	if err == nil || Classify(err) != fault.Permanent {
		t.Errorf("short md5: err %v kind %v, want permanent", err, Classify(err))
	}
	_, err = c.Put(ctx, PutInput{Key: "k", Body: big, MD5: sum[:], PartSize: 1 << 20})
	if err == nil || Classify(err) != fault.Fatal {
		t.Errorf("small part size: err %v kind %v, want fatal", err, Classify(err))
	}
	_, err = c.Put(ctx, PutInput{Key: "k", Body: big, MD5: wrong[:], PartSize: MinPartSize})
	if !errors.Is(err, ErrBadDigest) || Classify(err) != fault.Transient {
		t.Errorf("multipart with wrong md5: err %v kind %v, want ErrBadDigest transient", err, Classify(err))
	}
}

func TestIsBadDigest(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"s3 BadDigest", opErr(400, code("BadDigest", "The Content-MD5 you specified did not match")), true},
		{"checked before multipart", fmt.Errorf("put s3://b/k: %w (body 00, given 01)", ErrBadDigest), true},
		{"other 400", opErr(400, code("InvalidArgument", "bad")), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsBadDigest(tc.err); got != tc.want {
				t.Errorf("IsBadDigest(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// headErr is a HEAD's failure as the SDK returns it: HEAD has no body, so a proxy's answer to it
// has no code the SDK could read.
func headErr(status int) error {
	return &smithy.OperationError{ServiceID: "S3", OperationName: "HeadObject",
		Err: &awshttp.ResponseError{RequestID: "", ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: http.StatusText(status), Message: http.StatusText(status)}}}}
}

// plainBodyErr is a failure whose body is a proxy's text, not S3's XML: the SDK cannot read a
// code from it and says so, with the status.
func plainBodyErr(status int) error {
	return opErr(status, &smithy.DeserializationError{Err: errors.New("failed to decode response body, EOF"), Snapshot: []byte("no healthy upstream")})
}

// urlErr is a request that failed on its connection, as net/http returns it.
func urlErr(op string, errno syscall.Errno) error {
	return &url.Error{Op: "Put", URL: "https://s3.example/b/k", Err: &net.OpError{Op: op, Net: "tcp",
		Err: os.NewSyscallError(op, errno)}}
}

// TestIsUnreachable: S3 that cannot be reached, or is not served by what stands in front of it
// (502/503/504, a reset or cut connection), or throttles everyone, is an outage; an answer
// about this request (4xx, 500) and a timeout are not.
func TestIsUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", sendErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), true},
		{"no such host", sendErr(&net.DNSError{Err: "no such host", Name: "s3.example", IsNotFound: true}), true},
		{"503 no healthy upstream", opErr(503, code("ServiceUnavailable", "no healthy upstream")), true},
		{"503 plain-text body", plainBodyErr(503), true},
		{"502 bad gateway", opErr(502, code("BadGateway", "")), true},
		{"502 plain-text body", plainBodyErr(502), true},
		{"504 gateway timeout", opErr(504, code("GatewayTimeout", "")), true},
		{"HEAD 503", headErr(503), true},
		{"HEAD 504", headErr(504), true},
		{"503 SlowDown", opErr(503, code("SlowDown", "Please reduce your request rate.")), true},
		{"429 too many requests", opErr(429, code("TooManyRequests", "")), true},
		{"throttling code at 400", opErr(400, code("Throttling", "Rate exceeded")), true},
		{"bare response error 503", &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}},
			Err: &smithy.GenericAPIError{Code: "ServiceUnavailable", Message: "no healthy upstream"}}, true},
		{"connection reset", sendErr(urlErr("read", syscall.ECONNRESET)), true},
		{"connection reset, bare", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, true},
		{"broken pipe while sending", sendErr(urlErr("write", syscall.EPIPE)), true},
		{"connection aborted", sendErr(urlErr("read", syscall.ECONNABORTED)), true},
		{"EOF before an answer", sendErr(&url.Error{Op: "Put", URL: "https://s3.example/b/k", Err: io.EOF}), true},
		{"answer cut off", sendErr(io.ErrUnexpectedEOF), true},
		{"body cut off", fmt.Errorf("get s3://b/k: read body: %w", io.ErrUnexpectedEOF), true},
		{"body reset", fmt.Errorf("get s3://b/k: read body: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},

		{"nil", nil, false},
		{"500 internal error", opErr(500, code("InternalError", "")), false},
		{"HEAD 500", headErr(500), false},
		{"access denied", opErr(403, code("AccessDenied", "")), false},
		{"HEAD 403", headErr(403), false},
		{"not found", fmt.Errorf("head s3://b/k: %w", ErrNotFound), false},
		{"no such bucket", opErr(404, &types.NoSuchBucket{}), false},
		{"request timeout code", opErr(400, code("RequestTimeout", "")), false},
		{"bad digest", opErr(400, code("BadDigest", "")), false},
		{"deadline", sendErr(fmt.Errorf("wrapped: %w", context.DeadlineExceeded)), false},
		{"i/o timeout", sendErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}), false},
		{"certificate", sendErr(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false},
		{"unknown error", errors.New("something odd"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsUnreachable(tc.err); got != tc.want {
				t.Errorf("IsUnreachable(%v) = %v, want %v", tc.err, got, tc.want)
			}
			if tc.err != nil {
				if got := IsUnreachable(fmt.Errorf("key %q: %w", "k", tc.err)); got != tc.want {
					t.Errorf("IsUnreachable(wrapped %v) = %v, want %v", tc.err, got, tc.want)
				}
			}
		})
	}
}
