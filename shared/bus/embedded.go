package bus

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Sync is how a JetStream file store puts what it stored on disk. With Always it fsyncs each
// write before the PubAck (or the ack's consumer update) is sent, so whatever NATS confirmed
// survives a power loss or kernel crash of its host. Otherwise it fsyncs in the background every
// Interval, and a host crash loses up to that much confirmed work: on a single-replica stream
// that is a message the upstream stage already acked, gone. A process crash loses nothing with
// either: the writes are in the kernel's page cache.
type Sync struct {
	Always   bool
	Interval time.Duration // without Always; 0 is nats-server's default, DefaultSyncInterval
}

// DefaultSyncInterval is nats-server's background sync interval when none is configured.
const DefaultSyncInterval = 2 * time.Minute

// SyncAlways is the setting of `ferry run`'s embedded server and of the local stack.
var SyncAlways = Sync{Always: true}

// ParseSync reads nats-server's sync_interval syntax: "always" or a duration such as 2m.
func ParseSync(s string) (Sync, error) {
	if strings.EqualFold(strings.TrimSpace(s), "always") {
		return SyncAlways, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return Sync{}, fmt.Errorf("%q: want always or a positive duration such as 2m", s)
	}
	return Sync{Interval: d}, nil
}

// String is the sync_interval value: "always" or the interval.
func (s Sync) String() string {
	switch {
	case s.Always:
		return "always"
	case s.Interval == 0:
		return DefaultSyncInterval.String()
	}
	return s.Interval.String()
}

// Embedded runs a JetStream server inside the process (for `ferry run` and tests).
type Embedded struct{ srv *server.Server }

// StartEmbedded starts a JetStream server storing under dir, on a random loopback port, with an
// 8 MB payload limit like the local stack, syncing its store as sync says. Tests pass Sync{}
// (nats-server's default): they do not outlive their host, and an fsync per write slows them.
func StartEmbedded(dir string, sync Sync) (*Embedded, error) {
	return StartEmbeddedAt(dir, sync, "127.0.0.1", server.RANDOM_PORT)
}

// StartEmbeddedAt is StartEmbedded listening on host:port (port -1: a random one).
func StartEmbeddedAt(dir string, sync Sync, host string, port int) (*Embedded, error) {
	srv, err := server.NewServer(&server.Options{
		Host: host, Port: port, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: dir, MaxPayload: 8 << 20,
		SyncAlways: sync.Always, SyncInterval: sync.Interval,
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

// Sync is the sync setting the running server's JetStream reports (as /varz and /jsz do).
func (e *Embedded) Sync() Sync {
	c := e.srv.JetStreamConfig()
	if c == nil {
		return Sync{}
	}
	if c.SyncAlways {
		return SyncAlways
	}
	return Sync{Interval: c.SyncInterval}
}

// Shutdown stops the server and waits for it, flushing the store.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
