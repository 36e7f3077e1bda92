package bus

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                  "nats://127.0.0.1:4222",
		"nats://bob:s3cret@a:4222,nats://b:4222": "nats://bob:redacted@a:4222,nats://b:4222",
		"tls://tok3n@a:4222":                     "tls://redacted@a:4222",
		"nats://a:1, nats://carol:pw%20x@c:2":    "nats://a:1,nats://carol:redacted@c:2",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClientOptionsErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("SUAJUNKSEEDVALUE-not-a-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    Client
		want string
	}{
		{Client{User: "a", NKey: junk}, "one way to authenticate"},
		{Client{Password: "pw-secret"}, "needs --nats-user"},
		{Client{CA: filepath.Join(dir, "none.pem")}, "--nats-ca"},
		{Client{Cert: junk}, "--nats-cert and --nats-key"},
		{Client{Cert: junk, Key: junk}, "not a certificate"},
		{Client{NKey: junk}, "not an NKEY seed"},
	} {
		_, err := tc.c.Options()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.c, err, tc.want)
			continue
		}
		for _, secret := range []string{"pw-secret", "JUNKSEED"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows a secret", err)
			}
		}
	}
	if opts, err := (Client{}).Options(); err != nil || len(opts) != 0 {
		t.Errorf("empty client: %d options, %v", len(opts), err)
	}
}

// TestConnectUserPassword: a server with a user and password takes the right one; a wrong one is
// an authorization error that says what to check and does not repeat the password.
func TestConnectUserPassword(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), Username: "ferry", Password: "right-pw"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	ctx := context.Background()
	opts, err := Client{User: "ferry", Password: "right-pw"}.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc, _, err := Connect(ctx, srv.ClientURL(), "test", opts...)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	opts, _ = Client{User: "ferry", Password: "wrong-pw"}.Options()
	_, _, err = Connect(ctx, srv.ClientURL(), "test", opts...)
	if err == nil || !strings.Contains(err.Error(), "check the user") || strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("wrong password: %v", err)
	}
	_, _, err = Connect(ctx, strings.Replace(srv.ClientURL(), "://", "://ferry:wrong-pw@", 1), "test")
	if err == nil || strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("password in the URL: %v", err)
	}
}
