package bus

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"no stream leader", fmt.Errorf("key %q: publish to X: %w", "k", jetstream.ErrNoStreamResponse), true},
		{"no responders", nats.ErrNoResponders, true},
		{"pub ack timeout", fmt.Errorf("publish: %w", context.DeadlineExceeded), true},
		{"nats timeout", nats.ErrTimeout, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"cluster unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{"stream full", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}, true},
		{"wrong stream", &jetstream.APIError{Code: 400, ErrorCode: 10060, Description: "expected stream does not match"}, false},
		{"shutdown", context.Canceled, false},
		{"other", errors.New("boom"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Unavailable(tc.err); got != tc.want {
				t.Errorf("Unavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
