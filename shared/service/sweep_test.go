package service

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/telemetry"
)

// TestAdvisorSweepsOrphans: the background work every service starts (StartAdvisor) requeues
// orphans by itself within its sweep interval: 3 KEYS messages below the fetcher consumer's
// ack floor (a consumer reset, as the NATS cluster bugs leave them) come back as copies the
// consumer delivers, with ferry_orphans_requeued_total and one warning for the sweep.
func TestAdvisorSweepsOrphans(t *testing.T) {
	const total, k = 10, 4
	js, n := bustest.Job(t)
	ctx := context.Background()
	for i := 1; i <= total; i++ {
		key := fmt.Sprintf("photos/%03d.jpg", i)
		if _, err := js.Publish(ctx, n.KeysSubject, []byte(key), jetstream.WithMsgID(bus.MsgID("keys", bus.KeyID(n.Job, key)))); err != nil {
			t.Fatal(err)
		}
	}
	bustest.Orphan(t, js, n.Keys, n.Fetcher, k) // #1..#3 orphaned

	var logs syncBuffer
	e := &Env{Names: n, JS: js, Registry: telemetry.NewRegistry(), Checks: telemetry.NewChecks(),
		Log: slog.New(slog.NewTextHandler(&logs, nil)), SweepInterval: 200 * time.Millisecond}
	e.instrument()
	sctx, cancel := context.WithCancel(ctx)
	e.StartAdvisor(sctx)
	defer func() { cancel(); e.stopBackground() }()

	c, err := js.Consumer(ctx, n.Keys, n.Fetcher)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ci, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ci.NumPending == total && bustest.Msgs(t, js, n.Keys) == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphans not requeued: consumer pending %d of %d messages (want %d); log:\n%s", ci.NumPending, bustest.Msgs(t, js, n.Keys), total, logs.String())
		}
	}
	got := map[string]bool{}
	batch, err := c.Fetch(total, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		got[string(m.Data())] = true
		m.Ack()
	}
	if len(got) != total {
		t.Errorf("consumer delivered %d distinct keys, want %d", len(got), total)
	}
	var m dto.Metric
	if err := e.orphans.Requeued(n.Keys).Write(&m); err != nil {
		t.Fatal(err)
	}
	if v := m.GetCounter().GetValue(); v != k-1 {
		t.Errorf("ferry_orphans_requeued_total{stream=%s} = %v, want %d", n.Keys, v, k-1)
	}
	// The warning follows the sweep of every queue, after the copies and the counter: under load
	// it may come a moment after them.
	for deadline := time.Now().Add(10 * time.Second); strings.Count(logs.String(), "orphaned messages") == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if lines := strings.Count(logs.String(), "orphaned messages"); lines != 1 {
		t.Errorf("%d sweep warnings, want 1 (one per sweep that found any):\n%s", lines, logs.String())
	}
}

// syncBuffer is a bytes.Buffer the sweeper's goroutine may write while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
