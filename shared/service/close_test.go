package service

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
)

// TestCloseWaitsForDrain: Close returns only once the connection is closed, with everything it had
// buffered delivered; a process exits right after it, so a Drain that only starts would lose the
// acks of the last messages.
func TestCloseWaitsForDrain(t *testing.T) {
	srv, err := bus.StartEmbedded(t.TempDir(), bus.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(context.Background(), srv.URL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	n := bus.For("t")
	if _, err := bus.Setup(context.Background(), js, n, bus.DefaultSettings(), true); err != nil {
		t.Fatal(err)
	}
	const msgs = 5000
	for i := range msgs {
		if err := nc.Publish(n.KeysSubject, fmt.Appendf(nil, "key-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	e := &Env{NC: nc, Log: slog.Default()}
	e.Close()
	if !nc.IsClosed() {
		t.Fatalf("Close returned with the connection %s", nc.Status())
	}
	nc2, js2, err := bus.Connect(context.Background(), srv.URL(), "check")
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	for deadline := time.Now().Add(5 * time.Second); bustest.Msgs(t, js2, n.Keys) < msgs; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("KEYS holds %d of the %d messages published before Close", bustest.Msgs(t, js2, n.Keys), msgs)
		}
	}
}
