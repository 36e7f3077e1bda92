package bus

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/fault"
)

// Unavailable reports whether a JetStream publish failed because NATS could not take it at that
// moment: no stream leader answered (a cluster electing a new one after a node died), nobody
// listens, the connection is reconnecting, or the PubAck did not come in time. None of these is the
// message's fault, so a stage holds the message and tries again (stage.Outage) instead of using up
// a delivery; if the publish did land, the retry's Nats-Msg-Id makes it a duplicate the stream drops.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return false
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 // "JetStream system temporarily unavailable"
	}
	return false
}

// Mark gives a NATS error its fault kind: Outage when NATS could not take it at that moment
// (Unavailable), else Transient. nil stays nil.
func Mark(err error) error {
	if err == nil {
		return nil
	}
	if Unavailable(err) {
		return fault.Mark(err, fault.Outage)
	}
	return fault.Mark(err, fault.Transient)
}
