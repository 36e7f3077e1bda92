package blobstore

import (
	"context"
	"crypto/md5"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/config"

	"github.com/ferry-migrate/ferry/shared/fault"
)

// recordingS3 answers single PUTs and multipart uploads with success and records each request's
// method, query and headers.
type recordingS3 struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (f *recordingS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, r.Clone(context.Background()))
	f.mu.Unlock()
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPost && q.Has("uploads"):
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>`)
	case r.Method == http.MethodPost && q.Has("uploadId"):
		_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult><ETag>"abc-2"</ETag></CompleteMultipartUploadResult>`)
	case r.Method == http.MethodPut:
		w.Header().Set("ETag", `"abc"`)
	}
}

// find is the first recorded request of method whose query has param, or, when param starts with
// "!", has not.
func (f *recordingS3) find(t *testing.T, method, param string) *http.Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reqs {
		name, not := strings.CutPrefix(param, "!")
		if r.Method == method && r.URL.Query().Has(name) != not {
			return r
		}
	}
	t.Fatalf("no %s request with %q among %d", method, param, len(f.reqs))
	return nil
}

func fakeCreds(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "fake")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "fakesecret")
	t.Setenv("AWS_CA_BUNDLE", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func fakeDest(url string) config.Destination {
	return config.Destination{Endpoint: url, Region: "us-east-1", Bucket: "ferry-fake", PathStyle: true, Timeout: 10 * time.Second}
}

// TestSSEAndStorageClassHeaders: server-side encryption and the storage class go on the single
// PUT and on CreateMultipartUpload (parts inherit them; S3 refuses SSE headers on UploadPart).
func TestSSEAndStorageClassHeaders(t *testing.T) {
	fakeCreds(t)
	forgetEndpoints(t)
	f := &recordingS3{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	for _, tt := range []struct{ sse, kmsKey string }{{config.SSEKMS, "alias/ferry"}, {config.SSEAES256, ""}} {
		f.reqs = nil
		d := fakeDest(srv.URL)
		d.StorageClass, d.ServerSideEncryption, d.SSEKMSKeyID = "STANDARD_IA", tt.sse, tt.kmsKey
		c, err := New(context.Background(), d, 2)
		if err != nil {
			t.Fatal(err)
		}
		small := []byte("small body")
		sum := md5.Sum(small)
		if _, err := c.Put(context.Background(), PutInput{Key: "a/small", Body: small, MD5: sum[:]}); err != nil {
			t.Fatalf("single put: %v", err)
		}
		large := randomBody(MinPartSize + 10)
		lsum := md5.Sum(large)
		if res, err := c.Put(context.Background(), PutInput{Key: "a/large", Body: large, MD5: lsum[:], PartSize: MinPartSize}); err != nil || !res.Multipart {
			t.Fatalf("multipart put: %+v, %v", res, err)
		}
		for what, r := range map[string]*http.Request{"PutObject": f.find(t, http.MethodPut, "!partNumber"), "CreateMultipartUpload": f.find(t, http.MethodPost, "uploads")} {
			for h, want := range map[string]string{
				"X-Amz-Server-Side-Encryption":                tt.sse,
				"X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id": tt.kmsKey,
				"X-Amz-Storage-Class":                         "STANDARD_IA",
			} {
				if got := r.Header.Get(h); got != want {
					t.Errorf("sse %s: %s sent %s %q, want %q", tt.sse, what, h, got, want)
				}
			}
		}
		if h := f.find(t, http.MethodPut, "partNumber").Header.Get("X-Amz-Server-Side-Encryption"); h != "" {
			t.Errorf("UploadPart carries SSE %q: S3 refuses it there", h)
		}
	}
}

// TestCABundle: a server whose certificate is signed by a private CA is reachable with the CA in
// ca_bundle or AWS_CA_BUNDLE; without it every request fails Fatal, naming ca_bundle.
func TestCABundle(t *testing.T) {
	fakeCreds(t)
	forgetEndpoints(t)
	srv := httptest.NewUnstartedServer(&recordingS3{})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	body := []byte("over https")
	sum := md5.Sum(body)
	put := func(d config.Destination) error {
		t.Helper()
		c, err := New(context.Background(), d, 2)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		_, err = c.Put(context.Background(), PutInput{Key: "k", Body: body, MD5: sum[:]})
		return err
	}

	d := fakeDest(srv.URL)
	d.CABundle = ca
	if err := put(d); err != nil {
		t.Errorf("with ca_bundle: %v", err)
	}
	d.CABundle = ""
	err := put(d)
	if err == nil || Classify(err) != fault.Fatal || !strings.Contains(err.Error(), "destination.ca_bundle") {
		t.Errorf("without ca_bundle: %v (kind %v), want Fatal naming destination.ca_bundle", err, Classify(err))
	}
	t.Logf("without ca_bundle: %v", err)
	t.Setenv("AWS_CA_BUNDLE", ca)
	if err := put(d); err != nil {
		t.Errorf("with AWS_CA_BUNDLE: %v", err)
	}
	t.Setenv("AWS_CA_BUNDLE", filepath.Join(t.TempDir(), "missing.pem"))
	if _, err := New(context.Background(), d, 2); err == nil || !strings.Contains(err.Error(), "AWS_CA_BUNDLE") {
		t.Errorf("AWS_CA_BUNDLE of a missing file: %v", err)
	}
	t.Setenv("AWS_CA_BUNDLE", os.DevNull)
	if _, err := New(context.Background(), d, 2); err == nil || !strings.Contains(err.Error(), "AWS_CA_BUNDLE") {
		t.Errorf("AWS_CA_BUNDLE without a certificate: %v", err)
	}
}

func randomBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}
