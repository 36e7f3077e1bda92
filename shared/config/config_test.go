package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLocalJobFileIsValid(t *testing.T) {
	j, err := Load("../../deploy/local/ferry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Source.Targets) != 2 || j.Source.Targets[1].LocalDC != "dc2" {
		t.Fatalf("targets = %+v", j.Source.Targets)
	}
	if got := j.Source.Targets[0].CQL(); got != "SELECT data, writetime(data) FROM ferry_demo.blobs WHERE key = ?" {
		t.Errorf("CQL() = %q", got)
	}
}

func TestValidateErrors(t *testing.T) {
	base := `
source:
  targets:
    - {hosts: [127.0.0.1], table: ks.t}
destination: {bucket: my-bucket}
`
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"valid", base, ""},
		{"no targets", "destination: {bucket: b12}\n", "at least one read target"},
		{"bad table", strings.Replace(base, "ks.t", "kst", 1), "want keyspace.table"},
		{"query without ?", strings.Replace(base, "table: ks.t", "query: SELECT data FROM ks.t", 1), "exactly one '?'"},
		{"bad consistency", strings.Replace(base, "table: ks.t", "table: ks.t, consistency: MOST", 1), "unknown level"},
		{"bad bucket", strings.Replace(base, "my-bucket", "My_Bucket", 1), "not a valid S3 bucket name"},
		{"unknown field", base + "typo: 1\n", "field typo not found"},
		{"bad rewrite", base + "keys: {rewrite: [{match: '(', replace: x}]}\n", "rewrite[0].match"},
		{"template without key", base + "keys: {template: 'x/{hash2}'}\n", "must contain {key}"},
		{"template with a typo", base + "keys: {template: '{hash3}/{key}'}\n", "unknown placeholder {hash3}"},
		{"template with another case", base + "keys: {template: '{Key}/{key}'}\n", "unknown placeholder {Key}"},
		{"template with an open brace", base + "keys: {template: 'a{/{key}'}\n", "a brace outside a placeholder"},
		{"template with a closing brace", base + "keys: {template: '{key}}'}\n", "a brace outside a placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "test.yaml")
			if tt.wantErr == "" {
				if err != nil && tt.name == "valid" {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateJobName(t *testing.T) {
	for name, ok := range map[string]bool{"demo": true, "a_b-1": true, "": false, "a.b": false, "a b": false, "x*": false} {
		if err := ValidateJobName(name); (err == nil) != ok {
			t.Errorf("ValidateJobName(%q) = %v", name, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(os.DevNull + "/nope.yaml")
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("Load = %v", err)
	}
}

func TestDestinationTLSAndSSE(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := write("ca.pem", string(testCAPEM(t)))
	notPEM := write("notpem.pem", "hello\n")
	key := write("key.pem", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
	base := "source: {targets: [{hosts: [127.0.0.1], table: ks.t}]}\ndestination: {bucket: my-bucket, endpoint: 'https://s3.example:9000', %s}\n"
	if _, err := Parse([]byte(strings.Replace(strings.Replace(base, "https:", "http:", 1), "%s", "ca_bundle: "+ca, 1)), "job.yaml"); err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Errorf("ca_bundle with an http endpoint: %v", err)
	}
	for _, tt := range []struct{ dest, wantErr string }{
		{"ca_bundle: " + ca, ""},
		{"ca_bundle: " + ca + ", path_style: true", ""},
		{"ca_bundle: " + filepath.Join(dir, "missing.pem"), "ca_bundle: open " + filepath.Join(dir, "missing.pem")},
		{"ca_bundle: " + notPEM, "ca_bundle: " + notPEM + ": no PEM certificate"},
		{"ca_bundle: " + key, `is a "EC PRIVATE KEY", want CERTIFICATE`},
		{"server_side_encryption: AES256", ""},
		{"server_side_encryption: 'aws:kms', sse_kms_key_id: alias/ferry", ""},
		{"server_side_encryption: aes256", "server_side_encryption: \"aes256\" is not AES256 or aws:kms"},
		{"sse_kms_key_id: alias/ferry", "sse_kms_key_id: needs server_side_encryption: aws:kms"},
		{"server_side_encryption: AES256, sse_kms_key_id: alias/ferry", "sse_kms_key_id: needs"},
	} {
		j, err := Parse([]byte(strings.Replace(base, "%s", tt.dest, 1)), "job.yaml")
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.dest, err)
			} else if strings.Contains(tt.dest, "ca_bundle") && j.Destination.CABundle != ca {
				t.Errorf("%s: CABundle = %q", tt.dest, j.Destination.CABundle)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !IsInvalid(err) {
			t.Errorf("%s: error %v, want a config error containing %q", tt.dest, err, tt.wantErr)
		}
	}
}

// testCAPEM is a self-signed CA certificate.
func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestTargetPasswordFileAndTLS(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const secret = "pw-only-in-the-file"
	pw := write("pw", secret+"\r\nsecond line\n")
	emptyPW := write("empty", "\nsecret on line 2\n")
	missing := filepath.Join(dir, "missing")
	ca := write("ca.pem", string(testCAPEM(t)))
	certPEM, keyPEM := testKeyPair(t)
	cert, key := write("cert.pem", string(certPEM)), write("key.pem", string(keyPEM))
	for _, tt := range []struct{ target, wantErr string }{
		{"username: ferry, password_file: " + pw, ""},
		{"username: ferry", ""}, // the password then comes from the environment, checked at connect
		{"password_file: " + pw, "password_file: set, but username is empty"},
		{"username: ferry, password_file: " + missing, "password_file: open " + missing},
		{"username: ferry, password_file: " + emptyPW, "password_file: " + emptyPW + ": the first line is empty"},
		{"tls: {}", ""},
		{"tls: {ca_file: " + ca + "}", ""},
		{"tls: {ca_file: " + ca + ", server_name: cass.example, cert_file: " + cert + ", key_file: " + key + "}", ""},
		{"tls: {insecure_skip_verify: true}", ""},
		{"tls: {ca_file: " + missing + "}", "tls: ca_file: open " + missing},
		{"tls: {ca_file: " + key + "}", `tls: ca_file: ` + key + `: PEM block 1 is a "EC PRIVATE KEY"`},
		{"tls: {ca_file: " + ca + ", insecure_skip_verify: true}", "insecure_skip_verify: true ignores ca_file"},
		{"tls: {cert_file: " + cert + "}", "tls: cert_file and key_file: give both or neither"},
		{"tls: {key_file: " + key + "}", "tls: cert_file and key_file: give both or neither"},
		{"tls: {cert_file: " + cert + ", key_file: " + ca + "}", "tls: cert_file, key_file:"},
		{"tls: {server_name: 'a b'}", `tls: server_name: "a b" is not a host name`},
		{"tls: {cafile: x}", "field cafile not found"},
	} {
		doc := fmt.Sprintf("source: {targets: [{hosts: [127.0.0.3], table: ks.t, %s}]}\ndestination: {bucket: my-bucket}\n", tt.target)
		j, err := Parse([]byte(doc), "job.yaml")
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.target, err)
			} else if strings.Contains(tt.target, "tls") != (j.Source.Targets[0].TLS != nil) {
				t.Errorf("%s: TLS = %+v", tt.target, j.Source.Targets[0].TLS)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !IsInvalid(err) {
			t.Errorf("%s: error %v, want a config error containing %q", tt.target, err, tt.wantErr)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the password: %v", tt.target, err)
		}
	}
	if got, err := ReadPasswordFile(pw); err != nil || got != secret {
		t.Errorf("ReadPasswordFile = %q, %v; want the first line without \\r", got, err)
	}
}

// testKeyPair is a self-signed certificate for 127.0.0.1 and its key, PEM.
func testKeyPair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ferry"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
