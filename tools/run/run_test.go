package run

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/service"
)

// parse runs the flags of `ferry run` over args and validates them, as the command does first.
func parse(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	var cfg Config
	app := &cli.App{Flags: cfg.Flags(), Action: func(*cli.Context) error { return cfg.Validate() },
		Writer: &bytes.Buffer{}, ErrWriter: &bytes.Buffer{}, ExitErrHandler: func(*cli.Context, error) {}}
	err := app.Run(append([]string{"ferry-run"}, args...))
	return cfg, err
}

// TestDefaults: without flags `ferry run` uses the embedded server in ./ferry-data syncing every
// write, 64 of each stage's handlers, the fetcher's and uploader's size defaults, and the
// standalone stream settings except the smaller BLOBS and object store caps; those smaller caps do
// not leak into the other commands' defaults.
func TestDefaults(t *testing.T) {
	cfg, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:0"},
		{"sync", cfg.Sync, bus.SyncAlways},
		{"progress", cfg.Producer.Progress, true},
		{"wait", cfg.Wait, false},
		{"adaptive", cfg.Adaptive, false},
		{"fetchers", cfg.Fetcher.Concurrency, 64},
		{"uploaders", cfg.Uploader.Concurrency, 64},
		{"verifiers", cfg.Verifier.Concurrency, 64},
		{"inline limit", cfg.Fetcher.InlineLimit, int64(1 << 20)},
		{"max size", cfg.Fetcher.MaxSize, int64(256 << 20)},
		{"multipart threshold", cfg.Uploader.PartSize, int64(16 << 20)},
		{"deep sample", cfg.Verifier.Sample, 0.0},
		{"producer in flight", cfg.Producer.InFlight, 1024},
		{"producer high water", cfg.Producer.HighWater, int64(1_000_000)},
		{"producer parallel", cfg.Producer.Parallel, 4},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	want := bus.DefaultSettings()
	want.BlobsMaxBytes, want.ObjectsMaxBytes = runBlobsMaxBytes, runObjectsMaxBytes
	if cfg.Settings != want {
		t.Errorf("settings %+v, want %+v", cfg.Settings, want)
	}
	for name, s := range map[string]bus.Settings{"producer": cfg.Producer.Settings, "fetcher": cfg.Fetcher.Settings,
		"uploader": cfg.Uploader.Settings, "verifier": cfg.Verifier.Settings} {
		if s != cfg.Settings {
			t.Errorf("the %s's settings %+v, want the run's %+v", name, s, cfg.Settings)
		}
	}
	var other bus.Settings
	for _, fl := range other.Flags() {
		if i, ok := fl.(*cli.Int64Flag); ok && (i.Name == "blobs-max-bytes" || i.Name == "objects-max-bytes") && i.Value != 1<<30 {
			t.Errorf("--%s of the other commands defaults to %d after ferry run's flags, want 1 GiB", i.Name, i.Value)
		}
	}
}

// TestFlags: flags reach the stages' configurations; bad values are usage errors naming the value;
// the producer's flags are checked only when there is something to produce.
func TestFlags(t *testing.T) {
	list := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(list, []byte("a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		check func(Config) bool
		err   []string // in the error; none: valid
	}{
		{args: []string{"--adaptive", "--fetcher-concurrency", "8", "--uploader-concurrency", "9", "--verifier-concurrency", "10", "--max-deliver", "4"},
			check: func(c Config) bool {
				return c.Fetcher.Adaptive && c.Uploader.Adaptive && c.Fetcher.Concurrency == 8 && c.Uploader.Concurrency == 9 &&
					c.Verifier.Concurrency == 10 && c.Fetcher.Settings.MaxDeliver == 4 && c.Verifier.Settings.MaxDeliver == 4
			}},
		{args: []string{"--blobs-max-bytes", "1073741824"}, check: func(c Config) bool { return c.Uploader.Settings.BlobsMaxBytes == 1<<30 }},
		{args: []string{"--nats-sync-interval", "30s", "--listen", "127.0.0.1:4333"},
			check: func(c Config) bool {
				return c.Sync == bus.Sync{Interval: 30 * time.Second} && c.Listen == "127.0.0.1:4333"
			}},
		{args: []string{"--listen", "4333"}, err: []string{"--listen \"4333\": want host:port"}},
		{args: []string{"--keys", list}, check: func(c Config) bool { return len(c.Producer.Keys.Value()) == 1 }},
		{args: []string{"--fetchers", "8", "--verifiers", "9"}, check: func(c Config) bool { // the old names, hidden
			return c.Fetcher.Concurrency == 8 && c.Verifier.Concurrency == 9 && c.Uploader.Concurrency == 64
		}},
		{args: []string{"--fetcher-concurrency", "0"}, err: []string{"--fetcher-concurrency 0: must be 1..4096"}},
		{args: []string{"--uploader-concurrency", "5000", "--verifier-concurrency", "-1"}, err: []string{"--uploader-concurrency 5000", "--verifier-concurrency -1"}},
		{args: []string{"--read-rate", "-1"}, err: []string{"--read-rate and --byte-rate must not be negative"}},
		{args: []string{"--inline-limit", "10"}, err: []string{"--inline-limit 10B: must be at least 1KiB"}},
		{args: []string{"--inline-limit", "4MiB"}, check: func(c Config) bool { return c.Fetcher.InlineLimit == 4<<20 }},
		{args: []string{"--multipart-threshold", "1024"}, err: []string{"--multipart-threshold 1024"}},
		{args: []string{"--deep-sample", "2"}, err: []string{"--deep-sample 2: must be between 0 and 1"}},
		{args: []string{"--nats-sync-interval", "soon"}, err: []string{`--nats-sync-interval "soon"`}},
		{args: []string{"--keys", list, "--scan"}, err: []string{"--scan and --keys: give one or the other"}},
		{args: []string{"--scan", "--since", "2", "--since-margin", "1m"},
			check: func(c Config) bool {
				return c.Producer.Scan.Enabled && c.Producer.Scan.Since == "2" && c.Producer.Scan.SinceMargin == time.Minute
			}},
		{args: []string{"--scan", "--since", "last", "--restart"}, check: func(c Config) bool { return c.Producer.Scan.Since == "last" && c.Producer.Restart }},
		{args: []string{"--scan"}, check: func(c Config) bool {
			return c.Producer.Scan.Since == "" && c.Producer.Scan.SinceMargin == 10*time.Minute
		}},
		{args: []string{"--scan", "--since", "yesterday"}, err: []string{`--since "yesterday": neither a pass number, last, nor an RFC 3339 time`}},
		{args: []string{"--since", "1"}, err: []string{"--since: only with --scan"}},
	} {
		cfg, err := parse(t, tc.args...)
		if len(tc.err) == 0 {
			if err != nil {
				t.Errorf("%v: %v", tc.args, err)
			} else if !tc.check(cfg) {
				t.Errorf("%v: not applied: %+v", tc.args, cfg)
			}
			continue
		}
		if !config.IsInvalid(err) {
			t.Errorf("%v: %v, want a usage error", tc.args, err)
			continue
		}
		for _, w := range tc.err {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q, want it to hold %q", tc.args, err, w)
			}
		}
	}
}

// TestEmbeddedStore: the embedded server keeps its store in <--data>/nats, and a second start on
// the same folder finds the job's streams and messages there (how a run resumes).
func TestEmbeddedStore(t *testing.T) {
	cfg, err := parse(t, "--nats-sync-interval", "1m")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data = t.TempDir()
	n := bus.For("resume")
	for i, want := range []uint64{1, 2} {
		srv, err := startEmbedded(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nc, js, err := bus.Connect(context.Background(), srv.URL(), "test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bus.Setup(context.Background(), js, n, cfg.Settings, false); err != nil {
			t.Fatal(err)
		}
		m := bus.KeyMsg(n, "k", bus.KeyID(n.Job, "k")+string(rune('a'+i)), "test")
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		got := bustest.Msgs(t, js, n.Keys)
		nc.Close()
		srv.Shutdown()
		if got != want {
			t.Errorf("start %d: KEYS holds %d, want %d", i+1, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, "nats", "jetstream")); err != nil {
		t.Errorf("no store under --data/nats: %v", err)
	}
}

// TestWaitDone: the run ends once the producer is done and every work queue has stayed empty for
// three looks in a row; it keeps running while a queue holds work or with --wait, until its context
// ends.
func TestWaitDone(t *testing.T) {
	for _, tc := range []struct {
		name     string
		produced bool   // the producer has finished
		queued   string // a stream holding one message
		wait     bool
		ends     bool // waitDone returns before the context ends
	}{
		{name: "done", produced: true, ends: true},
		{name: "producing", produced: false},
		{name: "keys queued", produced: true, queued: "keys"},
		{name: "blobs queued", produced: true, queued: "blobs"},
		{name: "uploaded queued", produced: true, queued: "uploaded"},
		{name: "--wait", produced: true, wait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js, n := bustest.Job(t)
			env := &service.Env{Names: n, JS: js}
			if tc.queued != "" {
				subj := map[string]string{"keys": n.KeysSubject, "blobs": n.BlobsSubject, "uploaded": n.UploadedSubject}[tc.queued]
				if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: subj, Data: []byte("k")}); err != nil {
					t.Fatal(err)
				}
			}
			produced := make(chan struct{})
			if tc.produced {
				close(produced)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			start := time.Now()
			if err := waitDone(ctx, env, produced, tc.wait, func(context.Context) {}); err != nil {
				t.Fatal(err)
			}
			ended := ctx.Err() == nil
			if ended != tc.ends {
				t.Errorf("returned after %s before the context ended: %v, want %v", time.Since(start).Round(time.Millisecond), ended, tc.ends)
			}
			if tc.ends && time.Since(start) < time.Second {
				t.Errorf("returned after %s: sooner than three empty looks", time.Since(start))
			}
		})
	}
}

// TestSummary: the summary counts this run's verified keys apart from the job's, gives the rate
// over this run, and lists dead letters by stage and reason only when there are some.
func TestSummary(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Summary
		want []string
		not  []string
	}{
		{name: "clean", s: Summary{Job: "j", Verified: 30, VerifiedThisRun: 20, Elapsed: 2 * time.Second, Published: 20},
			want: []string{"ferry run, job j: 30 keys verified in S3 (20 in this run), 0 dead-lettered, 0 still in the pipeline",
				"elapsed 2s, 10 files/s verified; producer published 20 keys, 0 invalid lines"},
			not: []string{"dead letters"}},
		{name: "dead letters", s: Summary{Job: "j", Verified: 5, VerifiedThisRun: 5, Backlog: 7, Elapsed: time.Second, Published: 9, Invalid: 1,
			DeadLetters: deadletter.Counts{"fetcher/not_found": 2, "verifier/verify_missing": 1}},
			want: []string{"3 dead-lettered, 7 still in the pipeline", "1 invalid lines", "dead letters (ferry dlq ls | export | replay):",
				"fetcher not_found 2", "verifier verify_missing 1", "total 3"}},
		{name: "no time", s: Summary{Job: "j", VerifiedThisRun: 1}, want: []string{"1000 files/s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			tc.s.Print(&b)
			out := strings.Join(strings.Fields(b.String()), " ")
			for _, w := range tc.want {
				if !strings.Contains(out, strings.Join(strings.Fields(w), " ")) {
					t.Errorf("summary lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out, w) {
					t.Errorf("summary holds %q:\n%s", w, b.String())
				}
			}
		})
	}
}
