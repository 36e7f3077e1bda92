package bustest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Orphan makes the messages of a work queue below sequence k orphans, as the NATS cluster bugs
// `ferry repair` is for do (nats-server #4736, #7680), without a cluster: it resets the durable
// consumer to sequence k (the consumer reset API, nats-server 2.14+), so its ack floor is k−1
// while the stream still holds the messages below k, and the consumer will never deliver them.
// After a reset the server drops the messages below it from an interest stream, not from a
// work queue. (A consumer recreated with DeliverByStartSequence would do the same, but a work
// queue refuses it: "consumer must be deliver all on workqueue stream".)
func Orphan(t testing.TB, js jetstream.JetStream, stream, consumer string, k uint64) {
	t.Helper()
	if _, err := js.ResetConsumerToSequence(context.Background(), stream, consumer, k); err != nil {
		t.Fatalf("reset consumer %s on %s to #%d: %v", consumer, stream, k, err)
	}
}
