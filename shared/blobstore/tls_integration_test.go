//go:build integration

package blobstore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferry-migrate/ferry/shared/fault"
)

// TestIntegrationHTTPSWithCABundle starts a second versitygw (the local stack's binary, the local
// stack's keys) serving HTTPS with a certificate of a CA made here, then stores and reads objects
// through it with the CA in ca_bundle. Without the bundle every call fails Fatal, naming ca_bundle.
func TestIntegrationHTTPSWithCABundle(t *testing.T) {
	testEnv(t)
	t.Setenv("AWS_CA_BUNDLE", "")
	forgetEndpoints(t)
	ctx := context.Background()
	dir := t.TempDir()
	ca := writeTestPKI(t, dir)
	endpoint := startTLSVersityGW(t, dir)

	d := testDest(t, "ferry-tls")
	d.Endpoint = endpoint
	d.CABundle = ca
	c, err := New(ctx, d, 2)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := c.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(d.Bucket)}); err != nil {
		t.Fatalf("create bucket over https: %v", err)
	}
	if err := c.Check(ctx); err != nil {
		t.Fatalf("Check over https with ca_bundle: %v", err)
	}
	for _, n := range []int{1000, MinPartSize + 1000} {
		body := randomBytes(n)
		sum := md5.Sum(body)
		key := fmt.Sprintf("tls/%d", n)
		res, err := c.Put(ctx, PutInput{Key: key, Body: body, MD5: sum[:], PartSize: MinPartSize})
		if err != nil {
			t.Fatalf("Put %s over https: %v (kind %v)", key, err, Classify(err))
		}
		head, err := c.Head(ctx, key)
		if err != nil {
			t.Fatalf("Head %s: %v", key, err)
		}
		if err := head.Matches(int64(n), sum[:]); err != nil {
			t.Errorf("Head %s: %v", key, err)
		}
		got, err := c.Get(ctx, key)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("Get %s: %d bytes, %v; want the %d put", key, len(got), err, n)
		}
		t.Logf("%s over https: %d bytes, multipart %v", key, n, res.Multipart)
	}

	d.CABundle = ""
	plain, err := New(ctx, d, 1)
	if err != nil {
		t.Fatalf("New without ca_bundle: %v", err)
	}
	err = plain.Check(ctx)
	t.Logf("check without ca_bundle: %v", err)
	if err == nil || Classify(err) != fault.Fatal || !strings.Contains(err.Error(), "destination.ca_bundle") {
		t.Errorf("Check without ca_bundle: %v (kind %v), want fatal naming destination.ca_bundle", err, Classify(err))
	}
	body := []byte("x")
	sum := md5.Sum(body)
	if _, err := plain.Put(ctx, PutInput{Key: "tls/untrusted", Body: body, MD5: sum[:]}); err == nil || Classify(err) != fault.Fatal {
		t.Errorf("Put without ca_bundle: %v (kind %v), want fatal", err, Classify(err))
	}
}

// writeTestPKI writes ca.pem, and server.pem with server-key.pem for 127.0.0.1 signed by it, into
// dir; it returns the CA's path.
func writeTestPKI(t *testing.T, dir string) string {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, srvKey := newKey(), newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry blobstore test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "versitygw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.pem", "CERTIFICATE", caDER)
	write("server.pem", "CERTIFICATE", srvDER)
	write("server-key.pem", "EC PRIVATE KEY", keyDER)
	return filepath.Join(dir, "ca.pem")
}

// startTLSVersityGW runs versitygw (FERRY_VERSITYGW, else the local stack's .local/bin) with
// dir/server.pem on a free port, posix backend under dir, metadata in a sidecar folder (no user
// xattrs needed), the AWS chain's keys as its root user; it returns the https endpoint.
func startTLSVersityGW(t *testing.T, dir string) string {
	t.Helper()
	bin := os.Getenv("FERRY_VERSITYGW")
	if bin == "" {
		bin, _ = filepath.Abs("../../.local/bin/versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("versitygw: %v (make tools installs it)", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	root, sidecar := filepath.Join(dir, "root"), filepath.Join(dir, "sidecar")
	for _, p := range []string{root, sidecar} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--access", os.Getenv("AWS_ACCESS_KEY_ID"), "--secret", os.Getenv("AWS_SECRET_ACCESS_KEY"),
		"--port", addr, "--cert", filepath.Join(dir, "server.pem"), "--key", filepath.Join(dir, "server-key.pem"),
		"--quiet", "posix", "--sidecar", sidecar, root)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("--- versitygw log:\n%s", b)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw not listening on %s after 30s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "https://" + addr
}
