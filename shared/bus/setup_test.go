package bus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestClusterForming(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no peers yet", &jetstream.APIError{Code: 500, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{"temporarily unavailable", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"wrapped", fmt.Errorf("create stream X: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008}), true},
		{"replicas on a single server", &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{"insufficient storage", &jetstream.APIError{Code: 500, ErrorCode: 10047, Description: "insufficient storage resources available"}, false},
		{"plain error", errors.New("nats: timeout"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clusterForming(tc.err); got != tc.want {
				t.Errorf("clusterForming(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
