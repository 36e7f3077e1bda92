package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

// TestSetupObjectStoreCap: the object store of large blobs gets --objects-max-bytes as its cap,
// a service's Setup (no update) leaves an existing cap alone, and `ferry setup` (update) changes it.
func TestSetupObjectStoreCap(t *testing.T) {
	ctx := context.Background()
	js := embeddedJS(t)
	n := For("t")
	capOf := func() int64 {
		t.Helper()
		o, err := js.ObjectStore(ctx, n.Objects)
		if err != nil {
			t.Fatal(err)
		}
		st, err := o.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.(*jetstream.ObjectBucketStatus).StreamInfo().Config.MaxBytes
	}
	s := DefaultSettings()
	for _, step := range []struct {
		name   string
		cap    int64
		update bool
		want   int64
	}{
		{"created with the default", s.ObjectsMaxBytes, false, 1 << 30},
		{"a service's defaults keep ferry setup's cap", 1 << 30, false, 1 << 30},
		{"ferry setup lowers it", 64 << 20, true, 64 << 20},
		{"a service started with another value keeps it", 256 << 20, false, 64 << 20},
	} {
		s.ObjectsMaxBytes = step.cap
		if _, err := Setup(ctx, js, n, s, step.update); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := capOf(); got != step.want {
			t.Errorf("%s: object store cap %d, want %d", step.name, got, step.want)
		}
	}
	s.ObjectsMaxBytes = 1 << 20
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "--objects-max-bytes") {
		t.Errorf("a 1 MiB cap: Validate = %v, want an --objects-max-bytes error", err)
	}
}
