package stage_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// A worker that takes a message and dies (never acks) on its last delivery: the server's
// max-deliveries advisory must turn into a dead letter, and the message must leave the work queue.
func TestAdvisorDeadLettersExhaustedMessages(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	s := bus.DefaultSettings()
	// The server gives up at the first delivery: the backstop the advisor is for.
	s.AckWait, s.Dedupe, s.MaxDeliver, s.Backstop = time.Second, 2*time.Second, 1, 1
	if _, err := bus.Setup(ctx, js, n, s, true); err != nil {
		t.Fatal(err)
	}
	publishKeys(t, js, n, "doomed")
	cons, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() { // taken, never acked: the "crash"
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = stage.RunAdvisor(actx, js, n, nil, nil) }()
	deadline := time.Now().Add(10 * time.Second)
	for dlqCount(t, js, n, bus.StageFetcher, bus.ReasonMaxDeliveries) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no max_deliveries dead letter after 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := bustest.Msgs(t, js, n.Keys); got != 0 {
		t.Errorf("KEYS still holds %d messages, want 0 (the advisor deletes the original)", got)
	}
}
