package fetcher

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/fault"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// fakeReader serves blobs from a map; err, when set, is returned for every key.
type fakeReader struct {
	name  string
	blobs map[string][]byte
	err   error
	calls int
}

func (f *fakeReader) Name() string { return f.name }

// Read answers as cass.Reader does: errors carry their fault kind.
func (f *fakeReader) Read(_ context.Context, key string) ([]byte, error) {
	f.calls++
	err := f.err
	if err == nil {
		if b, ok := f.blobs[key]; ok {
			return b, nil
		}
		err = fmt.Errorf("key %q: %w", key, cass.ErrNotFound)
	}
	return nil, fault.Mark(err, cass.Classify(err))
}

func TestReadFallback(t *testing.T) {
	timeout := errors.New("gocql: no response received from cassandra within timeout period")
	tests := []struct {
		name       string
		readers    []*fakeReader
		wantSource string
		wantReason string // dead-letter reason; "" for success
		permanent  bool
		wantCalls  []int
		wantOutage bool
	}{
		{name: "first target serves",
			readers:    []*fakeReader{{name: "dc1", blobs: map[string][]byte{"k": []byte("x")}}, {name: "dc2"}},
			wantSource: "dc1", wantCalls: []int{1, 0}},
		{name: "falls back on not found",
			readers:    []*fakeReader{{name: "dc1"}, {name: "dc2", blobs: map[string][]byte{"k": {}}}},
			wantSource: "dc2", wantCalls: []int{1, 1}},
		{name: "falls back on timeout",
			readers:    []*fakeReader{{name: "dc1", err: timeout}, {name: "dc2", blobs: map[string][]byte{"k": []byte("x")}}},
			wantSource: "dc2", wantCalls: []int{1, 1}},
		{name: "not found everywhere is permanent",
			readers:    []*fakeReader{{name: "dc1"}, {name: "dc2"}},
			wantReason: bus.ReasonNotFound, permanent: true, wantCalls: []int{1, 1}},
		{name: "every target unreachable is an outage",
			readers:    []*fakeReader{{name: "dc1", err: gocql.ErrNoConnections}, {name: "dc2", err: gocql.ErrNoConnections}},
			wantOutage: true, wantCalls: []int{1, 1}},
		{name: "an error somewhere is transient: the key may be there",
			readers:    []*fakeReader{{name: "dc1", err: timeout}, {name: "dc2"}},
			wantReason: bus.ReasonSourceError, wantCalls: []int{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Fetcher{}
			for _, r := range tt.readers {
				f.Readers = append(f.Readers, r)
			}
			_, source, err := f.read(context.Background(), "k")
			if tt.wantOutage {
				if !stage.IsOutage(err) {
					t.Fatalf("read error %v, want an outage", err)
				}
			} else if tt.wantReason == "" {
				if err != nil || source != tt.wantSource {
					t.Fatalf("read = %q, %v; want %q", source, err, tt.wantSource)
				}
			} else {
				reason, perm := stage.IsPermanent(err)
				if perm != tt.permanent || (perm && reason != tt.wantReason) {
					t.Fatalf("read error %v: permanent=%v reason=%q; want permanent=%v reason=%q", err, perm, reason, tt.permanent, tt.wantReason)
				}
			}
			for i, r := range tt.readers {
				if r.calls != tt.wantCalls[i] {
					t.Errorf("reader %s called %d times, want %d", r.name, r.calls, tt.wantCalls[i])
				}
			}
		})
	}
}
