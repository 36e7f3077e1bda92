// Package cass is ferry's Cassandra client: sessions built from a read target, a Reader that
// fetches one blob by key, and the classification of driver errors into transient and permanent.
package cass

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/config"
)

// PasswordEnv names the environment variable holding the Cassandra password. It is never in the
// job file, so the file can be shared and committed.
const PasswordEnv = "FERRY_CASSANDRA_PASSWORD"

// password is the target's: its password_file (first line) if set, else $FERRY_CASSANDRA_PASSWORD.
// The errors never hold the password.
func password(t config.Target) (string, error) {
	if t.PasswordFile != "" {
		pw, err := config.ReadPasswordFile(t.PasswordFile)
		if err != nil {
			return "", config.Invalid(fmt.Errorf("cassandra target %s: password_file: %w", t.Name, err))
		}
		return pw, nil
	}
	pw := os.Getenv(PasswordEnv)
	if pw == "" {
		return "", config.Invalid(fmt.Errorf("cassandra target %s: username %q is set but %s is empty and there is no password_file", t.Name, t.Username, PasswordEnv))
	}
	return pw, nil
}

// TLSConfig is the client TLS of a read target: RootCAs from ca_file (the system's if empty), the
// client certificate if given, and the nodes verified by name (server_name, else each node's
// address) unless insecure_skip_verify.
func TLSConfig(c config.TargetTLS) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify}
	if c.CAFile != "" {
		certs, err := config.LoadCABundle(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		for _, cert := range certs {
			tc.RootCAs.AddCert(cert)
		}
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file, key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// ClusterConfig is the gocql configuration for target t, for up to concurrency queries in flight.
// NewSession uses it as is; the seed takes it and drops the host filter, since it writes to every DC.
func ClusterConfig(t config.Target, concurrency int) (*gocql.ClusterConfig, error) {
	c := gocql.NewCluster(t.Hosts...)
	// ProtoVersion stays 0: the driver negotiates the highest version the nodes speak.
	c.Consistency = gocql.LocalOne
	if t.Consistency != "" {
		cl, err := gocql.ParseConsistencyWrapper(t.Consistency)
		if err != nil {
			return nil, fmt.Errorf("cassandra target %s: consistency %q: %w", t.Name, t.Consistency, err)
		}
		c.Consistency = cl
	}
	if t.Timeout > 0 {
		c.Timeout = t.Timeout
	}
	if t.ConnTimeout > 0 {
		c.ConnectTimeout = t.ConnTimeout
	}
	c.NumConns = numConns(concurrency)
	// Token-aware first: the coordinator is then a replica and the blob crosses the network once.
	// DC-aware under it, so that without a filter the local DC is still preferred.
	c.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(gocql.DCAwareRoundRobinPolicy(t.LocalDC))
	if t.LocalDC != "" {
		// A target means "read from this DC": the fetcher falls back across targets itself, in the
		// order the operator chose, and records which one served the blob. Letting the driver
		// wander into a remote DC would hide that and put the load where nobody planned it.
		c.HostFilter = gocql.DataCentreHostFilter(t.LocalDC)
	}
	// A node that goes down is tried again every few seconds rather than the driver's default
	// minute, so a restarted node takes load again soon; the pool's own refills back off
	// exponentially so a dead node is not hammered.
	c.ReconnectInterval = 10 * time.Second
	c.ReconnectionPolicy = &gocql.ExponentialReconnectionPolicy{MaxRetries: 8, InitialInterval: 500 * time.Millisecond, MaxInterval: 10 * time.Second}
	if t.Username != "" {
		pw, err := password(t)
		if err != nil {
			return nil, err
		}
		c.Authenticator = gocql.PasswordAuthenticator{Username: t.Username, Password: pw}
		if r := t.Plaintext(); r != "" {
			config.WarnPlaintext(r) // warn, not refuse: see shared/config/plaintext.go
		}
	}
	if t.TLS != nil {
		tc, err := TLSConfig(*t.TLS)
		if err != nil {
			return nil, config.Invalid(fmt.Errorf("cassandra target %s: tls: %w", t.Name, err))
		}
		// With Config set, gocql verifies the node unless Config.InsecureSkipVerify says otherwise.
		c.SslOpts = &gocql.SslOptions{Config: tc, EnableHostVerification: !t.TLS.InsecureSkipVerify}
	}
	c.Logger = driverLogger{target: t.Name}
	// Query latency by result, hosts up and readiness by target (metrics.go).
	instrument(c, t.Name)
	return c, nil
}

// numConns sizes the connections per host. Protocol v3+ multiplexes 32,768 streams on one
// connection, so concurrency never runs out of streams; what it runs into is that each connection
// decodes its responses one after another on a single goroutine and socket. With blobs of up to
// ~32 MiB, one large response holds up the small ones queued behind it on the same connection. One
// connection per 16 queries in flight keeps that head-of-line wait short; at least 2 so one slow
// blob never stalls everything, at most 8 because each connection costs the node memory and a
// Netty channel and a host rarely needs more to saturate its disks.
func numConns(concurrency int) int {
	n := (concurrency + 15) / 16
	return min(max(n, 2), 8)
}

// NewSession opens a session to target t sized for concurrency queries in flight. With LocalDC
// set, the session only ever talks to nodes of that DC.
func NewSession(ctx context.Context, t config.Target, concurrency int) (*gocql.Session, error) {
	c, err := ClusterConfig(t, concurrency)
	if err != nil {
		return nil, err
	}
	return Open(ctx, t, c)
}

// Open creates a session from c, which describes target t. gocql's connect takes no context, so
// it runs aside: when ctx ends first Open returns at once and the session, should it still come
// up, is closed.
func Open(ctx context.Context, t config.Target, c *gocql.ClusterConfig) (*gocql.Session, error) {
	type result struct {
		s   *gocql.Session
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := c.CreateSession()
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, connectError(t, c, r.err)
		}
		return r.s, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, connectError(t, c, ctx.Err())
	}
}

func connectError(t config.Target, c *gocql.ClusterConfig, err error) error {
	where := strings.Join(t.Hosts, ",")
	if c.HostFilter != nil && t.LocalDC != "" {
		// The most common mistake: a local_dc no node has, or contact points from another DC.
		where += fmt.Sprintf(" (local_dc %s: only nodes of that DC are used)", t.LocalDC)
	}
	err = fmt.Errorf("cassandra target %s: connect to %s: %w%s", t.Name, where, err, hint(t, err))
	if strings.Contains(err.Error(), "host was filtered") {
		return config.Invalid(err) // every contact point is outside local_dc: a configuration error
	}
	return err
}

// hint names the setting to check when a connect failed on TLS or authentication.
func hint(t config.Target, err error) string {
	msg := err.Error()
	var unknown x509.UnknownAuthorityError
	var name x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown) || strings.Contains(msg, "certificate signed by unknown authority"):
		return " (check tls.ca_file: the PEM CAs that sign the nodes' certificates)"
	case errors.As(err, &name) || strings.Contains(msg, "x509: certificate is valid for") ||
		strings.Contains(msg, "x509: certificate is not valid for any names"):
		return " (check tls.server_name: the name in the nodes' certificates; empty means each node's address)"
	case errors.As(err, &invalid) || strings.Contains(msg, "x509: ") || strings.Contains(msg, "tls: "):
		return " (check the target's tls settings: ca_file, cert_file, key_file, server_name)"
	case strings.Contains(msg, "username") && strings.Contains(msg, "password"),
		strings.Contains(msg, "authentication required"):
		return " (check username and password_file or " + PasswordEnv + ")"
	case t.TLS == nil && (strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset")):
		return " (the node closed the connection: does it require TLS? set the target's tls)"
	}
	return ""
}

// driverLogger sends gocql's own messages (hosts going down, reconnects) to slog, tagged with the
// target, instead of the standard logger.
type driverLogger struct{ target string }

func (l driverLogger) Print(v ...any) { l.log(fmt.Sprint(v...)) }
func (l driverLogger) Printf(format string, v ...any) {
	l.log(fmt.Sprintf(format, v...))
}
func (l driverLogger) Println(v ...any) { l.log(fmt.Sprintln(v...)) }

func (l driverLogger) log(msg string) {
	level := slog.LevelWarn
	if strings.Contains(msg, "host was filtered") { // said again, clearer, by connectError
		level = slog.LevelDebug
	}
	slog.Log(context.Background(), level, strings.TrimSpace(msg), "component", "gocql", "target", l.target)
}
