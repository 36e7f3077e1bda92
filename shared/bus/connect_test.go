package bus

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/ferry-migrate/ferry/shared/config"
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
	srv := startServer(t, &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), Username: "ferry", Password: "right-pw"})
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

func TestClientInboxPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   string // the inbox prefix the connection gets; "" with err
		err    string
	}{
		{"", "", ""}, // no option: nats.go's own _INBOX
		{"_INBOX", "_INBOX", ""},
		{"_INBOX_fetcher", "_INBOX_fetcher", ""},
		{"ferry.photos.inbox", "ferry.photos.inbox", ""},
		{"_INBOX.", "", "empty token"},
		{".x", "", "empty token"},
		{"a..b", "", "empty token"},
		{"_INBOX_*", "", "no wildcards"},
		{"x.>", "", "no wildcards"},
		{"_INBOX fetcher", "", "no spaces"},
		{"_INBOX\tx", "", "no spaces"},
	} {
		opts, err := Client{InboxPrefix: tc.prefix}.Options()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "--nats-inbox-prefix") {
				t.Errorf("%q: error %v, want --nats-inbox-prefix ... %q", tc.prefix, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.prefix, err)
			continue
		}
		o := nats.GetDefaultOptions()
		for _, opt := range opts {
			if err := opt(&o); err != nil {
				t.Errorf("%q: nats refuses the option: %v", tc.prefix, err)
			}
		}
		if o.InboxPrefix != tc.want {
			t.Errorf("%q: inbox prefix %q, want %q", tc.prefix, o.InboxPrefix, tc.want)
		}
	}
}

// TestConnectInboxPrefix: a user that may subscribe only to _INBOX_fetcher.> works with that
// prefix, JetStream requests, publish acks (sync and async) and pull consumers included; with the
// default prefix or another service's it is refused at connect, quickly, with a hint at the flag.
func TestConnectInboxPrefix(t *testing.T) {
	srv := startServer(t, &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), Users: []*server.User{{Username: "fetcher", Password: "pw",
			Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{">"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_fetcher.>"}},
			}}}})
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"_INBOX_fetcher", true},
		{"", false},
		{"_INBOX", false},
		{"_INBOX_uploader", false},
	} {
		t.Run("prefix="+tc.prefix, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			opts, err := Client{User: "fetcher", Password: "pw", InboxPrefix: tc.prefix}.Options()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			nc, js, err := Connect(ctx, srv.ClientURL(), "test", opts...)
			if !tc.ok {
				if err == nil {
					nc.Close()
					t.Fatal("connected, want a permissions violation")
				}
				if msg := err.Error(); !strings.Contains(msg, "Permissions Violation for Subscription") ||
					!strings.Contains(msg, "--nats-inbox-prefix") || strings.Contains(msg, "\n") {
					t.Errorf("error %q: want one line with the violation and a hint at --nats-inbox-prefix", msg)
				}
				if d := time.Since(start); d > 4*time.Second { // the request timeout is 5 s
					t.Errorf("refused after %s: waited out the request instead of the violation", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if got := nc.NewInbox(); !strings.HasPrefix(got, tc.prefix+".") {
				t.Errorf("inbox %q", got)
			}
			s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"p"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, "p", []byte("sync")); err != nil {
				t.Fatal(err)
			}
			f, err := js.PublishAsync("p", []byte("async"))
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatal("no async publish ack")
			}
			cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatal(err)
			}
			var got atomic.Int32 // the callback runs on the subscription's goroutine
			cc, err := cons.Consume(func(m jetstream.Msg) {
				if err := m.DoubleAck(ctx); err != nil {
					t.Error(err)
				}
				got.Add(1)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Stop()
			for got.Load() < 2 && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			if n := got.Load(); n < 2 {
				t.Errorf("pulled %d of 2 messages", n)
			}
		})
	}
}

// TestClientCreds: a .creds file is checked at start; what is wrong with it is named, the seed
// never.
func TestClientCreds(t *testing.T) {
	dir := t.TempDir()
	acc, _ := nkeys.CreateAccount()
	user := func(expires int64) (string, []byte) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		uc := jwt.NewUserClaims(pub)
		uc.Expires = expires
		tok, err := uc.Encode(acc)
		if err != nil {
			t.Fatal(err)
		}
		return tok, seed
	}
	tok, seed := user(0)
	old, oldSeed := user(time.Now().Add(-time.Minute).Unix())
	later, laterSeed := user(time.Now().Add(time.Hour).Unix())
	_, otherSeed := user(0)
	creds := func(tok string, seed []byte) string {
		b, err := jwt.FormatUserConfig(tok, seed)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	good := creds(tok, seed)
	jwtOnly, _, _ := strings.Cut(good, "************************* IMPORTANT")
	for _, tc := range []struct {
		name, file, want string // want "": accepted
	}{
		{"good", good, ""},
		{"expires in an hour", creds(later, laterSeed), ""},
		{"expired", creds(old, oldSeed), "expired at"},
		{"JWT only", jwtOnly, "no user NKEY seed"},
		{"seed only", string(seed) + "\n", "no user JWT"},
		{"another user's seed", strings.Replace(good, string(seed), string(otherSeed), 1), "its seed is not the one of its JWT's user"},
		{"junk", "not a creds file\n", "no user JWT"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".creds")
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Client{Creds: path}.Options()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--nats-creds "+path)):
			t.Errorf("%s: error %v, want --nats-creds %s: ... %q", tc.name, err, path, tc.want)
		case err != nil:
			for _, s := range [][]byte{seed, oldSeed, otherSeed} {
				if strings.Contains(err.Error(), string(s)) {
					t.Errorf("%s: error %q shows a seed", tc.name, err)
				}
			}
		}
	}
}

// startServer runs an in-process nats-server with opts until the test ends.
func startServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	return srv
}

// TestConnectBadURLHidesPassword: a NATS URL that does not parse as meant (a password with /, %,
// ?, #, a space or ^, a port typo, a token with ^) fails at once as a usage error that names the
// URL with its password redacted; neither the error, nor Redact, nor the log shows any part of it.
// Before, nats.go's parse error quoted the whole URL, and "u:12?pw@host" parsed as the host "u".
func TestConnectBadURLHidesPassword(t *testing.T) {
	var logged strings.Builder
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)
	for _, tc := range []struct {
		url    string
		shown  string // Redact(url); its last URL is named in the error
		reason string // in the error
	}{
		{"nats://u:sekra/betxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:sekr%etxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "%25"},
		{"nats://u:sekr%zzetxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "%25"},
		{"nats://u:sekr?etxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:12?sekretxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:12/sekretxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:sekr#etxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:12#sekretxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:sekr etxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:sekr^etxq@127.0.0.1:4299", "nats://u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://u:sekretxq@127.0.0.1:42x9", "nats://u:redacted@127.0.0.1:42x9", "port"},
		{"nats://sekr^etxq@127.0.0.1:4299", "nats://redacted@127.0.0.1:4299", "percent-encode"},
		{"u:sekr^etxq@127.0.0.1:4299", "u:redacted@127.0.0.1:4299", "percent-encode"},
		{"nats://a:1, nats://u:sekretxq@[::1:4222", "nats://a:1,nats://u:redacted@[::1:4222", "host"},
	} {
		if got := Redact(tc.url); got != tc.shown {
			t.Errorf("Redact(%q) = %q, want %q", tc.url, got, tc.shown)
		}
		_, _, err := Connect(context.Background(), tc.url, "test")
		if err == nil {
			t.Errorf("%q: connected", tc.url)
			continue
		}
		msg := err.Error()
		for _, secret := range []string{"sekr", "etxq"} {
			if strings.Contains(msg, secret) {
				t.Errorf("%q: the error shows the password: %s", tc.url, msg)
			}
		}
		bad := tc.shown[strings.LastIndex(tc.shown, ",")+1:] // the URL that does not parse
		if !strings.Contains(msg, bad) || !strings.Contains(msg, tc.reason) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q, want one line naming %q and saying %q", tc.url, msg, bad, tc.reason)
		}
		if !config.IsInvalid(err) || !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: %v is not a usage error wrapping ErrBadURL", tc.url, err)
		}
	}
	if strings.Contains(logged.String(), "sekr") || strings.Contains(logged.String(), "etxq") {
		t.Errorf("the log shows a password: %s", logged.String())
	}
}

// TestReconnectLogHidesToken: the "nats reconnected" line names the server without its token.
// Before, it used nats.go's ConnectedUrlRedacted, which hides a password but not a token.
func TestReconnectLogHidesToken(t *testing.T) {
	var logged syncBuilder
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	defer slog.SetDefault(old)
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), Authorization: "tok-sekretxq"}
	srv := startServer(t, opts)
	url := strings.Replace(srv.ClientURL(), "://", "://tok-sekretxq@", 1)
	nc, _, err := Connect(context.Background(), url, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	again := *opts
	again.Port = srv.Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	srv.WaitForShutdown()
	startServer(t, &again)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logged.String(), "nats reconnected"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnection logged: %s", logged.String())
		}
	}
	if out := logged.String(); strings.Contains(out, "sekretxq") || !strings.Contains(out, "redacted@127.0.0.1") {
		t.Errorf("log %q: want the server named, its token redacted", out)
	}
}

// syncBuilder is a strings.Builder safe for the client's callback goroutine.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
