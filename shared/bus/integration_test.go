//go:build integration

package bus_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// TestLocalServer: the local nats-server (make up) has JetStream with an 8 MB payload limit, and
// takes a job's streams, a publish with dedupe, and a pull consumer.
func TestLocalServer(t *testing.T) {
	url := os.Getenv("FERRY_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, js, err := bus.Connect(ctx, url, "bus-test")
	if err != nil {
		t.Fatalf("local stack not running? (make up): %v", err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got < 8<<20-1 {
		t.Errorf("max_payload = %d, want 8 MB (deploy/local/nats.conf)", got)
	}
	n := bus.For(fmt.Sprintf("bustest-%d", time.Now().UnixNano()%1e9))
	if _, err := bus.Setup(ctx, js, n, bus.DefaultSettings(), false); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bus.Delete(context.Background(), js, n) }()
	if _, err := bus.Setup(ctx, js, n, bus.DefaultSettings(), true); err != nil { // idempotent
		t.Fatalf("second setup: %v", err)
	}
	for range 2 { // the second is a duplicate the broker drops
		m := bus.KeyMsg(n, "k1", bus.KeyID(n.Job, "k1"), "test:1")
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(bus.MsgID("keys", bus.KeyID(n.Job, "k1")))); err != nil {
			t.Fatal(err)
		}
	}
	big := bus.KeyMsg(n, string(make([]byte, 4<<20)), "big", "test:2") // above the 1 MB default
	if _, err := js.PublishMsg(ctx, big); err != nil {
		t.Fatalf("4 MiB message refused: %v", err)
	}
	cons, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, m.Headers().Get(bus.HdrOrigin))
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 || got[0] != "test:1" || got[1] != "test:2" {
		t.Fatalf("consumed %v, want [test:1 test:2] (the duplicate dropped)", got)
	}
	s, _ := js.Stream(ctx, n.Keys)
	if info, _ := s.Info(ctx); info.State.Msgs != 0 {
		t.Errorf("work queue holds %d messages after acks, want 0", info.State.Msgs)
	}
}
