package run

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// TestEmbeddedSync: `ferry run`'s embedded server fsyncs every write by default, and
// --nats-sync-interval trades that for nats-server's background sync; the setting is read back
// from the running server's JetStream config (what /varz and /jsz report).
func TestEmbeddedSync(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bus.Sync
	}{
		{nil, bus.SyncAlways},
		{[]string{"--nats-sync-interval", "2m"}, bus.Sync{Interval: 2 * time.Minute}},
		{[]string{"--nats-sync-interval", "ALWAYS"}, bus.SyncAlways},
	} {
		var cfg Config
		app := &cli.App{Flags: cfg.Flags(), Action: func(*cli.Context) error { return cfg.Validate() }}
		if err := app.Run(append([]string{"ferry-run"}, tc.args...)); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		cfg.Data = t.TempDir()
		srv, err := startEmbedded(cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := srv.Sync()
		srv.Shutdown()
		if got != tc.want {
			t.Errorf("%v: the embedded server syncs %v, want %v", tc.args, got, tc.want)
		}
	}

	var cfg Config
	app := &cli.App{Flags: cfg.Flags(), Action: func(*cli.Context) error { return cfg.Validate() }}
	for _, bad := range []string{"sometimes", "0s", "-1m"} {
		if err := app.Run([]string{"ferry-run", "--nats-sync-interval", bad}); err == nil {
			t.Errorf("--nats-sync-interval %s: accepted", bad)
		}
	}
}

// TestLocalStackSync: the local stack's nats-server (deploy/local/nats.conf) fsyncs every write
// too, as nats-server itself reads the file.
func TestLocalStackSync(t *testing.T) {
	path := filepath.Join("..", "..", "deploy", "local", "nats.conf")
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !o.JetStream || !o.SyncAlways {
		t.Errorf("%s: jetstream %v, sync always %v; want jetstream { sync_interval: always }", path, o.JetStream, o.SyncAlways)
	}
}
