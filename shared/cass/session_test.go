package cass

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/config"
)

func TestNumConns(t *testing.T) {
	for _, tt := range []struct{ concurrency, want int }{
		{0, 2}, {1, 2}, {16, 2}, {32, 2}, {33, 3}, {64, 4}, {128, 8}, {1000, 8},
	} {
		if got := numConns(tt.concurrency); got != tt.want {
			t.Errorf("numConns(%d) = %d, want %d", tt.concurrency, got, tt.want)
		}
	}
}

func TestClusterConfig(t *testing.T) {
	target := config.Target{
		Name: "dc2", Hosts: []string{"127.0.0.2"}, LocalDC: "dc2", Consistency: "local_quorum",
		Timeout: 3 * time.Second, ConnTimeout: 2 * time.Second,
	}
	c, err := ClusterConfig(target, 64)
	if err != nil {
		t.Fatal(err)
	}
	if c.Consistency != gocql.LocalQuorum || c.Timeout != 3*time.Second || c.ConnectTimeout != 2*time.Second ||
		c.NumConns != 4 || c.ProtoVersion != 0 {
		t.Errorf("got consistency %v timeout %v connect %v conns %d proto %d",
			c.Consistency, c.Timeout, c.ConnectTimeout, c.NumConns, c.ProtoVersion)
	}
	if c.HostFilter == nil {
		t.Fatal("local_dc set but no host filter")
	}
	if c.Authenticator != nil {
		t.Error("authenticator set without a username")
	}

	target.LocalDC = ""
	if c, _ = ClusterConfig(target, 1); c.HostFilter != nil {
		t.Error("host filter without local_dc")
	}

	target.Consistency = "SOMETIMES"
	if _, err := ClusterConfig(target, 1); err == nil || !strings.Contains(err.Error(), "dc2") {
		t.Errorf("bad consistency: err = %v, want an error naming the target", err)
	}
}

func TestClusterConfigPassword(t *testing.T) {
	target := config.Target{Name: "dc1", Hosts: []string{"127.0.0.1"}, Username: "ferry"}
	t.Setenv(PasswordEnv, "")
	if _, err := ClusterConfig(target, 1); err == nil || !strings.Contains(err.Error(), PasswordEnv) {
		t.Errorf("username without password: err = %v", err)
	}
	t.Setenv(PasswordEnv, "s3cret")
	c, err := ClusterConfig(target, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, ok := c.Authenticator.(gocql.PasswordAuthenticator)
	if !ok || a.Username != "ferry" || a.Password != "s3cret" {
		t.Errorf("authenticator = %#v", c.Authenticator)
	}
}

func TestClusterConfigPasswordFile(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("from-the-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, file, env, want, wantErr string
	}{
		{"file", pw, "", "from-the-file", ""},
		{"file wins over the environment", pw, "from-the-env", "from-the-file", ""},
		{"environment", "", "from-the-env", "from-the-env", ""},
		{"neither", "", "", "", PasswordEnv + " is empty and there is no password_file"},
		{"file gone since the job was loaded", filepath.Join(dir, "gone"), "from-the-env", "", "password_file: open "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(PasswordEnv, tt.env)
			c, err := ClusterConfig(config.Target{Name: "sec", Hosts: []string{"127.0.0.3"}, Username: "ferry", PasswordFile: tt.file}, 1)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !config.IsInvalid(err) {
					t.Fatalf("err = %v, want a config error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "from-the-") {
					t.Errorf("the error shows a password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a, ok := c.Authenticator.(gocql.PasswordAuthenticator); !ok || a.Username != "ferry" || a.Password != tt.want {
				t.Errorf("authenticator = %T, want ferry with the password %q", c.Authenticator, tt.want)
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	caPEM, _, caCert := testCert(t, nil)
	clientPEM, clientKey, _ := testCert(t, nil)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca, cert, key := write("ca.pem", caPEM), write("cert.pem", clientPEM), write("key.pem", clientKey)
	for _, tt := range []struct {
		name        string
		tls         config.TargetTLS
		wantRoots   bool // RootCAs is the ca_file's pool (else nil: the system's)
		wantCert    bool
		wantVerify  bool // gocql verifies the node: !InsecureSkipVerify and EnableHostVerification
		wantName    string
		wantErrPart string
	}{
		{name: "system CAs", tls: config.TargetTLS{}, wantVerify: true},
		{name: "ca_file", tls: config.TargetTLS{CAFile: ca}, wantRoots: true, wantVerify: true},
		{name: "ca_file and server_name", tls: config.TargetTLS{CAFile: ca, ServerName: "cass.example"}, wantRoots: true, wantVerify: true, wantName: "cass.example"},
		{name: "client certificate", tls: config.TargetTLS{CAFile: ca, CertFile: cert, KeyFile: key}, wantRoots: true, wantCert: true, wantVerify: true},
		{name: "insecure_skip_verify", tls: config.TargetTLS{InsecureSkipVerify: true}},
		{name: "ca_file missing", tls: config.TargetTLS{CAFile: filepath.Join(dir, "nope.pem")}, wantErrPart: "tls: ca_file: open "},
		{name: "key is not the certificate's", tls: config.TargetTLS{CertFile: cert, KeyFile: ca}, wantErrPart: "tls: cert_file, key_file: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ClusterConfig(config.Target{Name: "sec", Hosts: []string{"127.0.0.3"}, TLS: &tt.tls}, 1)
			if tt.wantErrPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrPart) || !config.IsInvalid(err) {
					t.Fatalf("err = %v, want a config error containing %q", err, tt.wantErrPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			o := c.SslOpts
			if o == nil || o.Config == nil {
				t.Fatal("tls set but no SslOpts.Config")
			}
			tc := o.Config
			if verify := !tc.InsecureSkipVerify && o.EnableHostVerification; verify != tt.wantVerify {
				t.Errorf("verifies the node = %v, want %v", verify, tt.wantVerify)
			}
			if tc.ServerName != tt.wantName || tc.MinVersion != tls.VersionTLS12 {
				t.Errorf("ServerName %q MinVersion %x", tc.ServerName, tc.MinVersion)
			}
			if (tc.RootCAs != nil) != tt.wantRoots {
				t.Errorf("RootCAs set = %v, want %v", tc.RootCAs != nil, tt.wantRoots)
			}
			if tt.wantRoots {
				if _, err := caCert.Verify(x509.VerifyOptions{Roots: tc.RootCAs}); err != nil {
					t.Errorf("RootCAs does not hold ca_file's certificate: %v", err)
				}
			}
			if (len(tc.Certificates) == 1) != tt.wantCert {
				t.Errorf("%d client certificates, want one: %v", len(tc.Certificates), tt.wantCert)
			}
		})
	}
	if c, _ := ClusterConfig(config.Target{Name: "plain", Hosts: []string{"127.0.0.1"}}, 1); c.SslOpts != nil {
		t.Error("SslOpts without tls")
	}
}

// TestTLSHandshakeErrors checks the one-line hints on a real handshake against a local listener
// whose certificate is for 127.0.0.1: no ca_file, then a wrong server_name.
func TestTLSHandshakeErrors(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, _ := testCert(t, []net.IP{net.IPv4(127, 0, 0, 1)})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		tls  config.TargetTLS
		want string
	}{
		{"no ca_file", config.TargetTLS{}, "check tls.ca_file"},
		{"wrong server_name", config.TargetTLS{CAFile: ca, ServerName: "other.example"}, "check tls.server_name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target := config.Target{Name: "sec", Hosts: []string{ln.Addr().String()}, TLS: &tt.tls}
			tc, err := TLSConfig(tt.tls)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ServerName == "" {
				tc.ServerName = "127.0.0.1" // as gocql does: the node's address
			}
			_, err = tls.Dial("tcp", ln.Addr().String(), tc)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			msg := connectError(target, &gocql.ClusterConfig{}, fmt.Errorf("gocql: unable to create session: %w", err)).Error()
			if !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line containing %q", msg, tt.want)
			}
		})
	}
}

func TestHint(t *testing.T) {
	plain := config.Target{Name: "p"}
	secure := config.Target{Name: "s", TLS: &config.TargetTLS{}}
	for _, tt := range []struct {
		t    config.Target
		err  string
		want string
	}{
		{secure, "tls: failed to verify certificate: x509: certificate signed by unknown authority", "check tls.ca_file"},
		{secure, "x509: certificate is valid for 127.0.0.3, not 127.0.0.4", "check tls.server_name"},
		{secure, "remote error: tls: bad certificate", "check the target's tls settings"},
		{plain, "Provided username ferry and/or password are incorrect", "check username and password_file or " + PasswordEnv},
		{plain, `authentication required (using "org.apache.cassandra.auth.PasswordAuthenticator")`, "check username"},
		{plain, "unable to discover protocol version: EOF", "does it require TLS?"},
		{secure, "unable to discover protocol version: EOF", ""},
		{plain, "no connections were made when creating the session", ""},
	} {
		if got := hint(tt.t, errors.New(tt.err)); (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("hint(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// testCert is a self-signed certificate (a CA too) for ips, PEM, with its key.
func testCert(t *testing.T, ips []net.IP) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "ferry test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: ips,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), cert
}
