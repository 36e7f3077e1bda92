package fetcher

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/gocql/gocql"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/fault"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// fakeReader serves blobs from a map, each written at writeTime; err, when set, is returned for
// every key.
type fakeReader struct {
	name      string
	blobs     map[string][]byte
	writeTime int64
	err       error
	calls     int
}

func (f *fakeReader) Name() string { return f.name }

// ReadBlob answers as cass.Reader does: errors carry their fault kind.
func (f *fakeReader) ReadBlob(_ context.Context, key string) (cass.Blob, error) {
	f.calls++
	err := f.err
	if err == nil {
		if b, ok := f.blobs[key]; ok {
			return cass.Blob{Data: b, WriteTime: f.writeTime}, nil
		}
		err = fmt.Errorf("key %q: %w", key, cass.ErrNotFound)
	}
	return cass.Blob{}, fault.Mark(err, cass.Classify(err))
}

func TestReadFallback(t *testing.T) {
	timeout := errors.New("gocql: no response received from cassandra within timeout period")
	tests := []struct {
		name       string
		readers    []*fakeReader
		pass       int // the KEYS message's Ferry-Pass
		wantSource string
		wantWT     int64
		wantReason string // dead-letter reason; "" for success
		permanent  bool
		wantCalls  []int
		wantOutage bool
	}{
		{name: "first target serves",
			readers:    []*fakeReader{{name: "dc1", blobs: map[string][]byte{"k": []byte("x")}, writeTime: 7}, {name: "dc2"}},
			wantSource: "dc1", wantWT: 7, wantCalls: []int{1, 0}},
		{name: "falls back on not found",
			readers:    []*fakeReader{{name: "dc1"}, {name: "dc2", blobs: map[string][]byte{"k": {}}, writeTime: 9}},
			wantSource: "dc2", wantWT: 9, wantCalls: []int{1, 1}},
		{name: "falls back on timeout",
			readers:    []*fakeReader{{name: "dc1", err: timeout}, {name: "dc2", blobs: map[string][]byte{"k": []byte("x")}}},
			wantSource: "dc2", wantCalls: []int{1, 1}},
		{name: "not found everywhere is permanent",
			readers:    []*fakeReader{{name: "dc1"}, {name: "dc2"}},
			wantReason: bus.ReasonNotFound, permanent: true, wantCalls: []int{1, 1}},
		{name: "a scanned key not found everywhere was deleted or expired since",
			readers: []*fakeReader{{name: "dc1"}, {name: "dc2"}}, pass: 2,
			wantReason: bus.ReasonDeleted, permanent: true, wantCalls: []int{1, 1}},
		{name: "a scanned key found is no different",
			readers: []*fakeReader{{name: "dc1", blobs: map[string][]byte{"k": []byte("x")}, writeTime: 5}}, pass: 1,
			wantSource: "dc1", wantWT: 5, wantCalls: []int{1}},
		{name: "a scanned key with an error somewhere is transient, not deleted",
			readers: []*fakeReader{{name: "dc1", err: errors.New("gocql: no response received from cassandra within timeout period")}, {name: "dc2"}}, pass: 1,
			wantReason: bus.ReasonSourceError, wantCalls: []int{1, 1}},
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
			blob, source, err := f.read(context.Background(), "k", tt.pass)
			if tt.wantOutage {
				if !stage.IsOutage(err) {
					t.Fatalf("read error %v, want an outage", err)
				}
			} else if tt.wantReason == "" {
				if err != nil || source != tt.wantSource || blob.WriteTime != tt.wantWT {
					t.Fatalf("read = %q at %d, %v; want %q at %d", source, blob.WriteTime, err, tt.wantSource, tt.wantWT)
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

// TestHandleWriteTime: the writetime read with the blob goes out on the BLOBS message, and the
// scan pass that published the key stays on it.
func TestHandleWriteTime(t *testing.T) {
	rules, err := keyrules.Compile(config.KeyRules{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		writeTime int64
		pass      int
	}{
		{"known", 1733577600123456, 3},
		{"unknown (a custom query without it)", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &Fetcher{Names: bus.For("j"), Rules: rules, InlineLimit: 1 << 20, MaxSize: 1 << 20,
				Readers: []Reader{&fakeReader{name: "dc1", blobs: map[string][]byte{"k": []byte("abc")}, writeTime: tc.writeTime}}}
			out, err := f.Handle(context.Background(), stage.Msg{Body: []byte("k"), Record: bus.Record{ID: "id", Pass: tc.pass, Size: -1}})
			if err != nil {
				t.Fatal(err)
			}
			if out.Record.WriteTime != tc.writeTime || out.Record.Pass != tc.pass || string(out.Body) != "abc" {
				t.Fatalf("BLOBS record writetime %d pass %d body %q; want %d, %d, \"abc\"", out.Record.WriteTime, out.Record.Pass, out.Body, tc.writeTime, tc.pass)
			}
		})
	}
}
