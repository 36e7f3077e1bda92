package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// downStore answers HEAD with head, or fails it with headErr, and GET with getErr.
type downStore struct {
	head            blobstore.HeadResult
	headErr, getErr error
}

func (s downStore) headRaw(context.Context, string) (blobstore.HeadResult, error) {
	return s.head, s.headErr
}
func (s downStore) getRaw(context.Context, string) ([]byte, error) { return nil, s.getErr }

// s3Answer is S3's (or its proxy's) answer as the SDK returns it.
func s3Answer(status int, code, msg string) error {
	return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
		Err: &smithy.GenericAPIError{Code: code, Message: msg}}
}

// TestVerifierS3DownBehindProxy: an S3 behind a load balancer or ingress whose backend is down
// answers 502/503/504 or cuts the connection. That is an outage (held, no run of the budget used),
// as a refused connection is, not a transient error: otherwise the whole backlog is dead-lettered
// once each message has used its budget. So is S3's throttling (503 SlowDown). A 500 is S3
// answering about this request: a transient error.
func TestVerifierS3DownBehindProxy(t *testing.T) {
	body := []byte("b")
	sum := md5.Sum(body)
	good := blobstore.HeadResult{Key: "p/k", Size: 1, ETag: hex.EncodeToString(sum[:])}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, tc := range []struct {
		name       string
		store      downStore
		sample     float64
		wantOutage bool
	}{
		{"503 no healthy upstream", downStore{headErr: s3Answer(503, "ServiceUnavailable", "no healthy upstream")}, 0, true},
		{"502 bad gateway", downStore{headErr: s3Answer(502, "BadGateway", "")}, 0, true},
		{"504 gateway timeout", downStore{headErr: s3Answer(504, "GatewayTimeout", "")}, 0, true},
		{"503 SlowDown", downStore{headErr: s3Answer(503, "SlowDown", "Please reduce your request rate.")}, 0, true},
		{"connection reset", downStore{headErr: reset}, 0, true},
		{"EOF before an answer", downStore{headErr: fmt.Errorf("head s3://b/p/k: %w", io.EOF)}, 0, true},
		{"deep check cut off", downStore{head: good, getErr: fmt.Errorf("get s3://b/p/k: read body: %w", io.ErrUnexpectedEOF)}, 1, true},
		{"500 internal error", downStore{headErr: s3Answer(500, "InternalError", "")}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			v := &Verifier{Names: n, JS: js, Store: tc.store, Sample: tc.sample}
			err := stage.Once(context.Background(), js, v.Handle, uploadedMsg(t, js, n, "k", "p/k", body))
			if stage.IsOutage(err) != tc.wantOutage {
				t.Errorf("Handle = %v: outage %v, want %v", err, stage.IsOutage(err), tc.wantOutage)
			}
			if _, permanent := stage.IsPermanent(err); err == nil || permanent || stage.IsFatal(err) {
				t.Errorf("Handle = %v, want a retry (an outage or a transient error)", err)
			}
		})
	}
}

// Head answers as the client does: errors carry their fault kind.
func (s downStore) Head(ctx context.Context, key string) (blobstore.HeadResult, error) {
	res, err := s.headRaw(ctx, key)
	return res, blobstore.Mark(err)
}

// GetIfMatch answers as the client does (whatever the ETag: the object has one version): errors carry their fault kind.
func (s downStore) GetIfMatch(ctx context.Context, key, _ string) ([]byte, error) {
	res, err := s.getRaw(ctx, key)
	return res, blobstore.Mark(err)
}
