package runstore

import (
	"context"
	"errors"
	"testing"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// TestReach: a store no process serves is reached through a server started on it (the job
// found there), which holds the folder until stopped; a store a ferry run holds is reached at
// the URL it published, and no second process may serve it.
func TestReach(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, _, err := Reach(dir); err == nil {
		t.Fatal("Reach of a folder without a store: no error")
	}

	// A ferry run that made a job, then stopped.
	run, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := bus.StartEmbedded(NATSDir(dir), bus.Sync{})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Publish(srv.URL()); err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second Lock while a run holds the store: %v, want ErrInUse", err)
	}
	url, stop, err := Reach(dir) // while it runs: its URL
	if err != nil || url != srv.URL() {
		t.Fatalf("Reach of a running store: %q, %v; want %q", url, err, srv.URL())
	}
	stop()
	nc, js, err := bus.Connect(ctx, url, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Setup(ctx, js, bus.For("j"), bus.DefaultSettings(), true); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()
	run.Close()

	// Stopped: Reach serves the store itself.
	url, stop, err = Reach(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrInUse) {
		t.Errorf("ferry run while a command serves its store: %v, want ErrInUse", err)
	}
	nc, js, err = bus.Connect(ctx, url, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, bus.For("j").Done); err != nil {
		t.Errorf("the job's DONE in the stopped store: %v", err)
	}
	nc.Close()
	stop()
	o, err := Lock(dir) // released
	if err != nil {
		t.Fatalf("Lock after the command stopped: %v", err)
	}
	o.Close()
}
