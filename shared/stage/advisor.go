package stage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// maxDeliveriesAdvisory is the part of $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES we use.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// RunAdvisor turns max-deliveries advisories into dead letters until ctx ends. Such a message ran
// out of deliveries without a handler dead-lettering it (its worker died or stalled each time);
// it stays in its work queue, where no consumer will deliver it again. Every service runs an
// advisor; they share one durable consumer, so each advisory is handled once.
func RunAdvisor(ctx context.Context, js jetstream.JetStream, n bus.Names, m *Metrics, log *slog.Logger) error {
	cons, err := js.Consumer(ctx, n.Advisories, n.Advisor)
	if err != nil {
		return fmt.Errorf("advisor: consumer %s on %s: %w", n.Advisor, n.Advisories, err)
	}
	stages := map[string]string{}
	for base, stage := range map[string]string{n.Keys: bus.StageFetcher, n.Blobs: bus.StageUploader, n.Uploaded: bus.StageVerifier} {
		for _, stream := range n.Streams(base) {
			stages[stream] = stage
		}
	}
	handle := func(ctx context.Context, in Msg) (*Output, error) {
		return nil, deadLetterAdvised(ctx, js, n, stages, in.Body)
	}
	return Serve(ctx, cons, handle, Options{Stage: bus.StageAdvisor, Names: n, JS: js, Workers: 2, Metrics: m, Log: log,
		KeyOf: func(Msg) string { return "" }})
}

// deadLetterAdvised dead-letters the message a max-deliveries advisory names, and deletes it.
func deadLetterAdvised(ctx context.Context, js jetstream.JetStream, n bus.Names, stages map[string]string, advisory []byte) error {
	var a maxDeliveriesAdvisory
	if err := json.Unmarshal(advisory, &a); err != nil {
		return Permanent(bus.ReasonMaxDeliveries, fmt.Errorf("advisory %q: %w", advisory, err))
	}
	stageName, ok := stages[a.Stream]
	if !ok {
		return nil // not one of this job's work queues
	}
	s, err := js.Stream(ctx, a.Stream)
	if err != nil {
		return fmt.Errorf("advisor: stream %s: %w", a.Stream, err)
	}
	raw, err := s.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // handled after all (acked or termed late)
	}
	if err != nil {
		return fmt.Errorf("advisor: get %s #%d: %w", a.Stream, a.StreamSeq, err)
	}
	key, err := bus.Text(raw.Header, bus.HdrKey)
	if key == "" || err != nil {
		key = string(raw.Data)
	}
	if err := bus.PublishDeadLetter(ctx, js, n, bus.DeadLetter{
		Key: key, Stage: stageName, Reason: bus.ReasonMaxDeliveries, Attempts: a.Deliveries, From: raw.Header,
		Err: fmt.Sprintf("delivered %d times to %s without being acknowledged (worker crashed or timed out)", a.Deliveries, a.Consumer),
	}); err != nil {
		return err
	}
	if err := s.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("advisor: delete %s #%d: %w", a.Stream, a.StreamSeq, err)
	}
	return nil
}
