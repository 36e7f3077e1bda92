// Package bustest starts an in-process JetStream server with a job set up, for the stages' tests.
package bustest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// Job starts an embedded server for the test's lifetime and sets up job "t" on it.
func Job(t testing.TB) (jetstream.JetStream, bus.Names) {
	t.Helper()
	_, js, n := JobAt(t)
	return js, n
}

// JobAt is Job that also returns the server's URL, for tests that run a command against it
// (--nats URL --job t).
func JobAt(t testing.TB) (string, jetstream.JetStream, bus.Names) {
	t.Helper()
	srv, err := bus.StartEmbedded(t.TempDir(), bus.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(context.Background(), srv.URL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	n := bus.For("t")
	s := bus.DefaultSettings()
	s.MaxDeliver = 3
	if _, err := bus.Setup(context.Background(), js, n, s, true); err != nil {
		t.Fatal(err)
	}
	return srv.URL(), js, n
}

// Msgs is the number of messages in a stream.
func Msgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// Verified stores a DONE entry for each key, as the verifier would (a record of one byte).
func Verified(t testing.TB, js jetstream.JetStream, n bus.Names, keys ...string) {
	t.Helper()
	for _, key := range keys {
		rec := bus.Record{ID: bus.KeyID(n.Job, key), Key: key, S3Key: key, Size: 1, MD5: make([]byte, 16)}
		m := nats.NewMsg(n.DoneSubject)
		rec.Encode(m.Header)
		m.Header.Set("Nats-Msg-Id", bus.MsgID("done", rec.ID))
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}
