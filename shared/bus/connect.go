package bus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect dials NATS and returns the connection and its JetStream context. name shows in
// `nats server report connections`, so use the stage.
// MaxAsyncPending is how many async publishes a connection allows outstanding; publishers that
// share one divide it among themselves.
const MaxAsyncPending = 2048

func Connect(ctx context.Context, url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url,
		nats.Name("ferry "+name),
		nats.MaxReconnects(-1), // a NATS restart must not end a months-long migration
		nats.ReconnectWait(time.Second),
		nats.Timeout(10*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				slog.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { slog.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	// Bounded async publishing: past a few thousand outstanding publishes the client stalls.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(MaxAsyncPending))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream on %s: %w", url, err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream is not enabled on %s: %w", url, err)
	}
	return nc, js, nil
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
