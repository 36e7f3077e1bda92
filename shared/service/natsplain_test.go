package service

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/urfave/cli/v2"
)

// TestNATSPlaintextWarning: a password or token sent to a NATS server without TLS, on a host that
// is not loopback, is warned about once at start, naming the server and not the secret, unless
// --nats-allow-plaintext says it is deliberate; loopback and anonymous connections are not.
// Before, nothing was said.
func TestNATSPlaintextWarning(t *testing.T) {
	remote := nonLoopbackIP(t)
	for _, tc := range []struct {
		name, auth, host string // auth: password, token or none
		args             []string
		warn             bool
	}{
		{"password, remote", "password", remote, nil, true},
		{"token, remote", "token", remote, nil, true},
		{"password, remote, allowed", "password", remote, []string{"--nats-allow-plaintext"}, false},
		{"password, loopback", "password", "127.0.0.1", nil, false},
		{"anonymous, remote", "none", remote, nil, false},
		{"password, remote, nats:// to a TLS server", "password+tls", remote, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			opts := &server.Options{Host: "0.0.0.0", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
				JetStream: true, StoreDir: t.TempDir()}
			switch tc.auth {
			case "password+tls":
				ca, tlsConf := selfSigned(t, tc.host)
				opts.TLSConfig, opts.TLS = tlsConf, true
				args = append(args, "--nats-ca", ca)
				fallthrough
			case "password":
				opts.Username, opts.Password = "ferry", "pw-sekretxq"
			case "token":
				opts.Authorization = "tok-sekretxq"
			}
			srv, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			srv.Start()
			defer srv.Shutdown()
			if !srv.ReadyForConnections(10 * time.Second) {
				t.Fatal("not ready")
			}
			port := srv.Addr().(*net.TCPAddr).Port
			url := fmt.Sprintf("nats://%s", net.JoinHostPort(tc.host, fmt.Sprint(port)))
			switch tc.auth {
			case "password", "password+tls":
				args = append(args, "--nats-user", "ferry")
				t.Setenv(PasswordEnv, "pw-sekretxq")
			case "token":
				url = strings.Replace(url, "://", "://tok-sekretxq@", 1)
			}
			t.Setenv(NATSEnv, url)

			var logged strings.Builder
			old := slog.Default()
			slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
			defer slog.SetDefault(old)
			app := &cli.App{Name: "ferry", Flags: GlobalFlags(), Action: func(c *cli.Context) error {
				for range 2 { // a second connection: no second warning
					nc, _, err := Connect(c.Context, c, "test")
					if err != nil {
						return err
					}
					nc.Close()
				}
				return nil
			}}
			if err := app.Run(append([]string{"ferry"}, args...)); err != nil {
				t.Fatal(err)
			}
			out := logged.String()
			if n := strings.Count(out, "level=WARN"); n != map[bool]int{true: 1}[tc.warn] || strings.Contains(out, "sekretxq") ||
				(tc.warn && (!strings.Contains(out, fmt.Sprint(port)) || !strings.Contains(out, "--nats-allow-plaintext"))) {
				t.Errorf("logged %q, want %v warning naming the server and --nats-allow-plaintext, without the secret", out, tc.warn)
			}
		})
	}
}

// selfSigned is a certificate for ip, as a server TLS config and the PEM file of its CA (itself).
func selfSigned(t *testing.T, ip string) (caFile string, _ *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(ip)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

// nonLoopbackIP is an IPv4 address of this machine that is not loopback.
func nonLoopbackIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Skip("no address but loopback")
	return ""
}
