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

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/ferry-migrate/ferry/shared/config"
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
	if err := CheckURLs(url); err != nil {
		return nil, nil, err
	}
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
		// Redact, not ConnectedUrlRedacted, which hides a password but not a token.
		nats.ReconnectHandler(func(c *nats.Conn) { slog.Info("nats reconnected", "url", Redact(c.ConnectedUrl())) }),
		// Async errors (a permissions violation, a slow consumer) in the service's log, not
		// printed raw on stderr by nats.go's default handler.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { slog.Warn("nats async error", "err", err) }),
	}, opts...)...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) {
			return nil, nil, fmt.Errorf("connect to nats %s: %w (check the user and its password, --nats-creds, --nats-nkey or the client certificate)", shown, err)
		}
		if strings.Contains(strings.ToLower(err.Error()), "tls") || errors.Is(err, nats.ErrSecureConnRequired) {
			return nil, nil, fmt.Errorf("connect to nats %s: %w (check --nats-ca, and --nats-cert/--nats-key if the server asks for a client certificate)", shown, err)
		}
		var uerr *neturl.Error
		if errors.As(err, &uerr) { // quotes the URL; CheckURLs should have caught it
			return nil, nil, config.Invalid(fmt.Errorf("connect to nats %s: %w", shown, ErrBadURL))
		}
		return nil, nil, fmt.Errorf("connect to nats %s: %w", shown, err)
	}
	// Bounded async publishing: past a few thousand outstanding publishes the client stalls.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(MaxAsyncPending))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream on %s: %w", shown, err)
	}
	if err := accountInfo(ctx, nc, js); err != nil {
		nc.Close()
		if errors.Is(err, nats.ErrPermissionViolation) {
			hint := "the user may not use the JetStream API: check its permissions"
			if strings.Contains(err.Error(), "Subscription to") {
				hint = "check --nats-inbox-prefix: the user may receive replies only under its own inbox prefix"
			}
			return nil, nil, fmt.Errorf("jetstream on %s: %w (%s)", shown, err, hint)
		}
		return nil, nil, fmt.Errorf("jetstream is not enabled on %s for this user: %w", shown, err)
	}
	return nc, js, nil
}

// InClear reports, in one line, that nc sends a password or token (secret: one was given, by
// --nats-user or in the URL) in clear: the connection is not TLS (nats:// to a server that does
// not ask for TLS) and the server is not loopback. "" otherwise: NKEY and creds authentication
// send a signature, never the seed.
func InClear(nc *nats.Conn, secret bool) string {
	if !secret || nc == nil {
		return ""
	}
	if _, err := nc.TLSConnectionState(); err == nil || config.Loopback(nc.ConnectedAddr()) {
		return ""
	}
	return fmt.Sprintf("NATS server %s: the password or token crosses the network in clear (no TLS); use tls:// with --nats-ca, or --nats-creds or --nats-nkey (never sent), or --nats-allow-plaintext (FERRY_NATS_ALLOW_PLAINTEXT) if that is deliberate", Redact(nc.ConnectedUrl()))
}

// accountInfo asks for the account's JetStream info, ending the wait at the first permissions
// violation (WhileAllowed).
func accountInfo(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error {
	ctx, cancel := WhileAllowed(ctx, nc)
	defer cancel()
	_, err := js.AccountInfo(ctx)
	if err != nil && errors.Is(context.Cause(ctx), nats.ErrPermissionViolation) {
		return context.Cause(ctx)
	}
	return err
}

// WhileAllowed returns a context that ends, with the violation as its cause, when the server
// reports a permissions violation on nc. A request the server refuses (a publish the user may
// not make, or a reply inbox it may not subscribe to) gets no reply, only that async error: use
// it at start, where any violation is the request's, so that the request fails at once instead of
// after its timeout.
func WhileAllowed(ctx context.Context, nc *nats.Conn) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
					cancel(err)
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// Redact replaces the passwords (and tokens) in a comma-separated list of NATS URLs, for messages.
// It works on the text, not on a parsed URL, so that a URL that does not parse (a password holding
// /, ?, #, %, a space, a port typo) or parses otherwise than meant (nats://u:12?pw@host reads as
// the host "u") shows no part of its password either: everything between "://" and the last @ is
// the user information, of which only a user name before a colon is kept.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = redactOne(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func redactOne(u string) string {
	at := strings.LastIndex(u, "@")
	if at < 0 {
		return u
	}
	start := 0
	if i := strings.Index(u, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	if user, _, ok := strings.Cut(u[start:at], ":"); ok {
		return u[:start] + user + ":redacted@" + u[at+1:]
	}
	return u[:start] + "redacted@" + u[at+1:] // a token or a user alone: hide either
}

// CheckURLs reads each of the comma-separated NATS URLs as nats.go will (a missing scheme is
// nats://) and fails, as a usage error wrapping ErrBadURL, on one that does not parse or whose
// user information does not end up as the user and password (an @ after a /, ? or #). The error
// names the URL redacted and says what to change; it never quotes url.Parse's error, which
// repeats the URL and, for a bad escape or port, a piece of the password.
func CheckURLs(urls string) error {
	for p := range strings.SplitSeq(urls, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		full := p
		if !strings.Contains(full, "://") {
			full = "nats://" + full
		}
		u, err := neturl.Parse(full)
		var reason string
		var esc neturl.EscapeError
		var host neturl.InvalidHostError
		switch {
		case err == nil && strings.Contains(p, "@") && (u.User == nil || strings.Contains(u.Host, "@")):
			reason = "its user or password holds /, ? or #: " + encodeHint
		case err == nil:
			continue
		case errors.As(err, &esc):
			reason = "a % that does not start a %XX escape: write % in a user or password as %25, " + elseHint
		case errors.As(err, &host):
			reason = "an invalid character in the host"
		case strings.Contains(err.Error(), "invalid userinfo"):
			reason = "its user or password holds a character a URL does not allow (a space, ^, \", <, >, `, {, |, }): " + encodeHint
		case strings.Contains(err.Error(), "invalid port") && !strings.Contains(p, "@"):
			reason = "the port is not a number"
		case strings.Contains(err.Error(), "invalid port"):
			reason = "the port is not a number, or the user or password holds /, ? or #: " + encodeHint
		case strings.Contains(err.Error(), "missing ']'"):
			reason = "a [ without ] in the host"
		default:
			reason = "it does not parse as scheme://[user:password@]host:port"
		}
		return config.Invalid(fmt.Errorf("%s: %w: %s", Redact(p), ErrBadURL, reason))
	}
	return nil
}

const (
	elseHint   = "or give the password in FERRY_NATS_PASSWORD or --nats-password-file"
	encodeHint = "percent-encode it (%2F, %3F, %23, %20, …) " + elseHint
)

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
	// InboxPrefix replaces _INBOX in the subjects replies come back on (requests, pulls, publish
	// acks), so that a server can let each service's user subscribe to its own replies only.
	// Empty: _INBOX.
	InboxPrefix string
}

// DefaultInboxPrefix is the inbox prefix of NATS clients that set none.
const DefaultInboxPrefix = "_INBOX"

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
		if err := checkCreds(c.Creds); err != nil {
			return nil, fmt.Errorf("--nats-creds %s: %w", c.Creds, err)
		}
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
	if c.InboxPrefix != "" {
		if err := checkInboxPrefix(c.InboxPrefix); err != nil {
			return nil, fmt.Errorf("--nats-inbox-prefix %q: %w", c.InboxPrefix, err)
		}
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
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

// checkCreds reads a .creds file as nats.go will at each connect, to say at start what is wrong
// with it: no user JWT, no seed, a seed of another user, a JWT past its expiry (the server
// would only answer Authorization Violation). Errors never quote the file.
func checkCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer clear(b)
	tok, err := nkeys.ParseDecoratedJWT(b)
	if err != nil {
		return errors.New("not a creds file (a user JWT and its NKEY seed, e.g. from nsc generate creds)")
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return errors.New("no user JWT in it: not a creds file (a user JWT and its NKEY seed, e.g. from nsc generate creds)")
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return errors.New("no user NKEY seed in it: not a creds file (a user JWT and its NKEY seed, e.g. from nsc generate creds)")
	}
	defer kp.Wipe()
	if pub, err := kp.PublicKey(); err != nil || pub != uc.Subject {
		return fmt.Errorf("its seed is not the one of its JWT's user %s", uc.Subject)
	}
	if uc.Expires > 0 && time.Now().Unix() > uc.Expires {
		return fmt.Errorf("the user JWT of %s expired at %s: get new credentials", uc.Subject, time.Unix(uc.Expires, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// checkInboxPrefix: p is one or more subject tokens without wildcards, like _INBOX_fetcher.
func checkInboxPrefix(p string) error {
	for tok := range strings.SplitSeq(p, ".") {
		switch {
		case tok == "":
			return errors.New("an empty token (a leading, trailing or double dot)")
		case strings.ContainsAny(tok, "*>"):
			return errors.New("no wildcards (* or >): the client adds the rest of each inbox")
		case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return errors.New("no spaces or control characters")
		}
	}
	return nil
}

// ErrBadURL marks a NATS URL that does not parse as meant.
var ErrBadURL = errors.New("not a valid NATS URL")
