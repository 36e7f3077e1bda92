package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxAsyncPending is how many async publishes a connection allows outstanding; publishers that
// share one divide it among themselves.
const MaxAsyncPending = 2048

// Connect dials NATS and returns the connection and its JetStream context. url may list several
// servers of a cluster separated by commas; the client also learns the others from the server it
// reaches, and on a lost connection it moves to another one. name shows in
// `nats server report connections`, so use the stage. opts (Client.Options) add authentication
// and TLS.
func Connect(ctx context.Context, url, name string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	shown := Redact(url)
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name("ferry " + name),
		nats.MaxReconnects(-1), // a NATS restart must not end a months-long migration
		nats.ReconnectWait(time.Second),
		nats.Timeout(10 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				slog.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { slog.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}, opts...)...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) {
			return nil, nil, fmt.Errorf("connect to nats %s: %w (check the user and its password, --nats-creds, --nats-nkey or the client certificate)", shown, err)
		}
		if strings.Contains(strings.ToLower(err.Error()), "tls") || errors.Is(err, nats.ErrSecureConnRequired) {
			return nil, nil, fmt.Errorf("connect to nats %s: %w (check --nats-ca, and --nats-cert/--nats-key if the server asks for a client certificate)", shown, err)
		}
		return nil, nil, fmt.Errorf("connect to nats %s: %w", shown, err)
	}
	// Bounded async publishing: past a few thousand outstanding publishes the client stalls.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(MaxAsyncPending))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream on %s: %w", shown, err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream is not enabled on %s for this user: %w", shown, err)
	}
	return nc, js, nil
}

// Redact replaces the passwords (and tokens) in a comma-separated list of NATS URLs, for messages.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := neturl.Parse(strings.TrimSpace(p))
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = "(unparsable URL with credentials)"
			}
			continue
		}
		if u.User != nil {
			if _, ok := u.User.Password(); ok {
				u.User = neturl.UserPassword(u.User.Username(), "redacted")
			} else {
				u.User = neturl.User("redacted") // a token or a user alone: hide either
			}
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// Client says how a connection proves who it is and how it checks the server. Every field but
// Password names a file or a user; the password is read from the environment or a file by the
// caller, never taken from a command line, and never printed.
type Client struct {
	Creds     string // user JWT and NKEY seed (a .creds file, decentralized auth)
	NKey      string // NKEY seed file (a user listed by public key in the server's config)
	User      string // user name; its password in Password
	Password  string
	CA        string // PEM file of the CAs that sign the server's certificate (else the system's)
	Cert, Key string // PEM files of the client certificate and its key (mutual TLS)
}

// Options turns c into nats options, checking that the files it names can be read; errors name
// the flag and the file, never a secret.
func (c Client) Options() ([]nats.Option, error) {
	var opts []nats.Option
	n := 0
	for _, set := range []bool{c.Creds != "", c.NKey != "", c.User != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("--nats-creds, --nats-nkey and --nats-user: give one way to authenticate")
	}
	if c.Password != "" && c.User == "" {
		return nil, errors.New("a NATS password (FERRY_NATS_PASSWORD or --nats-password-file) needs --nats-user")
	}
	for _, f := range []struct{ flag, path string }{{"--nats-creds", c.Creds}, {"--nats-nkey", c.NKey},
		{"--nats-ca", c.CA}, {"--nats-cert", c.Cert}, {"--nats-key", c.Key}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	switch {
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: not an NKEY seed file", c.NKey) // err may quote the file
		}
		opts = append(opts, o)
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("--nats-cert and --nats-key: give both or neither")
	}
	if c.Cert != "" {
		if _, err := tls.LoadX509KeyPair(c.Cert, c.Key); err != nil {
			return nil, fmt.Errorf("--nats-cert %s / --nats-key %s: not a certificate and its key", c.Cert, c.Key)
		}
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	return opts, nil
}

// Embedded runs a JetStream server inside the process (for `ferry run` and tests).
type Embedded struct{ srv *server.Server }

// StartEmbedded starts a JetStream server storing under dir, on a random loopback port, with an
// 8 MB payload limit like the local stack.
func StartEmbedded(dir string) (*Embedded, error) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: dir, MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats in %s: %w", dir, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats in %s: not ready after 30s", dir)
	}
	return &Embedded{srv: srv}, nil
}

// URL is the client URL of the embedded server.
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it, flushing the store.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
