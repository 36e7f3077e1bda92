// Package cass is ferry's Cassandra client: sessions built from a read target, a Reader that
// fetches one blob by key, and the classification of driver errors into transient and permanent.
package cass

import (
	"context"
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
		pw := os.Getenv(PasswordEnv)
		if pw == "" {
			return nil, fmt.Errorf("cassandra target %s: username %q is set but %s is empty", t.Name, t.Username, PasswordEnv)
		}
		c.Authenticator = gocql.PasswordAuthenticator{Username: t.Username, Password: pw}
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
	err = fmt.Errorf("cassandra target %s: connect to %s: %w", t.Name, where, err)
	if strings.Contains(err.Error(), "host was filtered") {
		return config.Invalid(err) // every contact point is outside local_dc: a configuration error
	}
	return err
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
