package stage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/limit"
)

// Handler is a stage: a function of one message's content that returns what to hand on (nil for
// nothing) or an error whose kind (Permanent, Transient, Outage, Fatal) tells the runner what to
// do. It cannot ack: the runner stores the output, runs Output.Stored, and only then acks, so
// "ack only after the output is stored" holds by construction.
type Handler func(ctx context.Context, in Msg) (*Output, error)

// Msg is a handler's input.
type Msg struct {
	Subject string
	// Record is what the headers say (bus.DecodeRecord); Malformed names the headers that did not
	// parse, so that each stage dead-letters a damaged message with its own reason.
	Record    bus.Record
	Malformed error
	Body      []byte
	// Progress tells the broker the handler is still at work (a long upload calls it per part);
	// the runner also does on a timer.
	Progress func()
}

// KeyOf is the source key in: its Ferry-Key, else its body (KEYS messages carry the key there).
func (in Msg) KeyOf() string {
	if in.Record.Key != "" {
		return in.Record.Key
	}
	return string(in.Body)
}

// Output is a message a handler hands on.
type Output struct {
	Subject string
	Stream  string // the stream it must be stored in (Nats-Expected-Stream)
	ID      string // its Nats-Msg-Id: a redelivery's output is the same message, dropped as a duplicate
	Record  bus.Record
	Body    []byte
	// Stored, if set, runs once the output is stored and before the input is acked (the
	// uploader's object-store cleanup). It is best effort: the ack does not wait on its success.
	Stored func(ctx context.Context)
}

// input is what the handler sees of msg.
func input(msg jetstream.Msg) Msg {
	rec, err := bus.DecodeRecord(msg.Headers())
	return Msg{Subject: msg.Subject(), Record: rec, Malformed: err, Body: msg.Data(), Progress: func() { _ = msg.InProgress() }}
}

// store publishes out and waits for the stream to hold it. A full stream (its byte cap) is
// waited on, not failed: the input's work is done, and redoing it (a Cassandra read, an upload)
// would only load the dependency more. A NATS that cannot take it is an Outage.
func store(ctx context.Context, js jetstream.JetStream, key string, out *Output) error {
	m := nats.NewMsg(out.Subject)
	out.Record.Encode(m.Header)
	m.Data = out.Body
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, 2*time.Second) {
		_, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(out.ID), jetstream.WithExpectStream(out.Stream))
		if err == nil {
			return nil
		}
		if !StreamFull(err) { // checked first: JetStream answers a full stream with a 503
			// No stream leader yet, reconnecting: an Outage, not the key's fault.
			return bus.Mark(fmt.Errorf("key %q: publish to %s: %w", key, out.Stream, err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("key %q: publish to %s (full): %w", key, out.Stream, ctx.Err())
		case <-time.After(wait):
			limit.Waited(ctx, wait) // backpressure, not the dependency: keep it out of the adaptive limit
		}
	}
}

// StreamFull reports a publish refused because the stream is at its byte cap (DiscardNew).
func StreamFull(err error) bool { return strings.Contains(err.Error(), "maximum bytes exceeded") }

// Once runs h on msg as the runner does (the output stored, then Stored) without acking it: for
// handler tests that read what a stage handed on from its stream.
func Once(ctx context.Context, js jetstream.JetStream, h Handler, msg jetstream.Msg) error {
	return deliver(ctx, js, h, input(msg))
}

// deliver runs h on in, stores its output and runs its Stored hook.
func deliver(ctx context.Context, js jetstream.JetStream, h Handler, in Msg) error {
	out, err := h(ctx, in)
	if err != nil || out == nil {
		return err
	}
	if ctx.Err() != nil {
		// The grace period ended as the handler returned (a fused key's read, handed on when
		// its upload was cut): store the work done rather than redo it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
	}
	if err := store(ctx, js, in.KeyOf(), out); err != nil {
		return err
	}
	if out.Stored != nil {
		out.Stored(ctx)
	}
	return nil
}
