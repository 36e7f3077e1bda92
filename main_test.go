package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/runstore"
	"github.com/ferry-migrate/ferry/shared/service"
)

// TestRepairCommand runs `ferry repair` as the binary does (the app, its global flags) against an
// in-process nats-server with two orphans in BLOBS: the dry run lists them and changes nothing,
// the repair requeues them and says so per stage, bad input is a usage error (exit 2).
func TestRepairCommand(t *testing.T) {
	ctx := context.Background()
	url, js, n := bustest.JobAt(t)
	for i := 1; i <= 5; i++ {
		m := nats.NewMsg(n.BlobsSubject)
		m.Header.Set(bus.HdrKey, fmt.Sprintf("photos/%d.jpg", i))
		m.Data = []byte("blob")
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprintf("fetcher:%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	bustest.Orphan(t, js, n.Blobs, n.Uploader, 3) // #1 and #2 orphaned

	run := func(args ...string) (string, error) {
		a := app()
		var b bytes.Buffer
		a.Writer = &b
		err := a.RunContext(ctx, append([]string{"ferry", "--nats", url, "--job", n.Job}, args...))
		return b.String(), err
	}
	expect := func(out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
	}

	out, err := run("repair", "--dry-run", "--stage", "uploader")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run:\n%s", out)
	expect(out,
		"uploader  FERRY_t_BLOBS #1  photos/1.jpg\n",
		"uploader  FERRY_t_BLOBS #2  photos/2.jpg\n",
		"uploader  FERRY_t_BLOBS: 2 orphaned (at or below #2, the consumer's ack floor), would requeue 2\n",
		"would requeue 2 orphaned messages (--dry-run: nothing changed)\n")
	if strings.Contains(out, "fetcher") || bustest.Msgs(t, js, n.Blobs) != 5 {
		t.Errorf("--stage uploader dry run: other stages shown, or BLOBS changed (%d messages):\n%s", bustest.Msgs(t, js, n.Blobs), out)
	}
	s, err := js.Stream(ctx, n.Blobs)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := s.GetMsg(ctx, 1); err != nil || raw.Header.Get(bus.HdrKey) != "photos/1.jpg" {
		t.Errorf("after the dry run #1 is %v, %v", raw, err)
	}

	out, err = run("repair")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repair:\n%s", out)
	expect(out,
		"fetcher   FERRY_t_KEYS: none orphaned (at or below #0, the consumer's ack floor)\n",
		"uploader  FERRY_t_BLOBS: 2 orphaned (at or below #2, the consumer's ack floor), 2 requeued\n",
		"verifier  FERRY_t_UPLOADED: none orphaned",
		"advisor   FERRY_t_ADVISORIES: none orphaned",
		"requeued 2 orphaned messages\n")
	if strings.Contains(out, "photos/") {
		t.Errorf("a repair lists keys only with --dry-run:\n%s", out)
	}
	if si, _ := s.Info(ctx); si.State.Msgs != 5 || si.State.FirstSeq != 3 || si.State.LastSeq != 7 {
		t.Errorf("BLOBS after repair: %+v, want 5 messages, #3..#7", si.State)
	}
	c, _ := js.Consumer(ctx, n.Blobs, n.Uploader)
	if ci, _ := c.Info(ctx); ci.NumPending != 5 {
		t.Errorf("uploader consumer: %d pending, want all 5", ci.NumPending)
	}

	out, err = run("repair")
	if err != nil || !strings.Contains(out, "requeued 0 orphaned messages\n") {
		t.Errorf("second repair: %v\n%s", err, out)
	}

	if _, err := run("repair", "--stage", "producer"); err == nil || !config.IsInvalid(err) || !strings.Contains(err.Error(), `--stage "producer"`) {
		t.Errorf("unknown stage: %v, want a usage error", err)
	}
	if out, err := run("--job", "nope", "repair", "--stage", "uploader"); err == nil || !config.IsInvalid(err) || !strings.Contains(err.Error(), `job "nope" not found`) || out != "" {
		t.Errorf("unknown job: %v, %q; want a usage error and no output", err, out)
	}
}

// TestReadCommandsCreateNothing: on a job that does not exist (a mistyped --job, the wrong
// --nats), every command that reads a job or maintains one says so in one line and exits 2, and
// leaves the server as it was: no stream, KV bucket or object store of that job is created.
func TestReadCommandsCreateNothing(t *testing.T) {
	ctx := context.Background()
	srv, err := bus.StartEmbedded(t.TempDir(), bus.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(ctx, srv.URL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	out := t.TempDir()
	for _, args := range [][]string{
		{"status"}, {"report", "--out", out}, {"dlq", "ls"}, {"dlq", "export"}, {"dlq", "replay", "--dry-run"},
		{"dlq", "replay"}, {"throttle"}, {"throttle", "--read-rate", "5"}, {"repair", "--dry-run"},
		{"console", "--listen", "127.0.0.1:0"},
	} {
		a := app()
		var b bytes.Buffer
		a.Writer, a.ErrWriter = &b, &b
		err := a.RunContext(ctx, append([]string{"ferry", "--nats", srv.URL(), "--job", "nosuchjob"}, args...))
		if err == nil || !config.IsInvalid(err) || !strings.Contains(err.Error(), `job "nosuchjob" not found`) {
			t.Errorf("ferry %s on a missing job: %v; want a usage error (exit 2) saying the job was not found", strings.Join(args, " "), err)
		}
		var names []string
		for name := range js.StreamNames(ctx).Name() {
			names = append(names, name)
		}
		if len(names) > 0 {
			t.Fatalf("ferry %s on a missing job created %v", strings.Join(args, " "), names)
		}
	}
}

// TestOneShotCommandsServeNoMetrics: a command that does its work and exits runs beside a
// service that holds --metrics-addr (FERRY_METRICS_ADDR set for the whole pod): it serves no
// metrics, so the busy port is no error.
func TestOneShotCommandsServeNoMetrics(t *testing.T) {
	ctx := context.Background()
	srv, err := bus.StartEmbedded(t.TempDir(), bus.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, args := range [][]string{{"setup"}, {"status"}, {"dlq", "ls"}, {"throttle"}, {"report", "--out", t.TempDir()}} {
		a := app()
		var b bytes.Buffer
		a.Writer, a.ErrWriter = &b, &b
		if err := a.RunContext(ctx, append([]string{"ferry", "--nats", srv.URL(), "--job", "j", "--metrics-addr", busy.Addr().String()}, args...)); err != nil {
			t.Errorf("ferry %s with --metrics-addr in use: %v", strings.Join(args, " "), err)
		}
	}
}

// TestToolsReachRunStore: `ferry --data DIR status` (and dlq, report …) reaches the job of a
// stopped ferry run through its store, and releases the store when done (service.Cleanup).
func TestToolsReachRunStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := bus.StartEmbedded(runstore.NATSDir(dir), bus.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	nc, js, err := bus.Connect(ctx, srv.URL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Setup(ctx, js, bus.For("photos"), bus.DefaultSettings(), true); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()
	t.Setenv(service.NATSEnv, "nats://127.0.0.1:1") // --data on the command line wins over it
	for _, args := range [][]string{{"status", "--json"}, {"dlq", "ls"}} {
		a := app()
		var b bytes.Buffer
		a.Writer, a.ErrWriter = &b, &b
		err := a.RunContext(ctx, append([]string{"ferry", "--data", dir, "--job", "photos"}, args...))
		service.Cleanup()
		if err != nil {
			t.Errorf("ferry --data %s %s: %v\n%s", dir, strings.Join(args, " "), err, b.String())
		}
	}
	o, err := runstore.Lock(dir)
	if err != nil {
		t.Fatalf("the store is still held after the commands: %v", err)
	}
	o.Close()
}
