package producer

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/service"
)

// compress returns body as a list file of the given kind: "" (plain), "gz" or "zst".
func compress(t *testing.T, kind, body string) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch kind {
	case "gz":
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(body))
		zw.Close()
	case "zst":
		zw, _ := zstd.NewWriter(&buf)
		zw.Write([]byte(body))
		zw.Close()
	default:
		buf.WriteString(body)
	}
	return buf.Bytes()
}

// interrupt turns a list's finished checkpoint into the one a run stopped at that point leaves.
func interrupt(t *testing.T, kv jetstream.KeyValue, key string) {
	t.Helper()
	ctx := context.Background()
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var cp map[string]any
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		t.Fatal(err)
	}
	cp["done"] = false
	b, _ := json.Marshal(cp)
	if _, err := kv.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}
}

// TestRunChangedList: a key list that changed since its checkpoint is resumed only when the part
// already published is unchanged (the list grew, or was rewritten with the same lines); a list
// whose published part changed is refused with a line naming --restart.
func TestRunChangedList(t *testing.T) {
	tests := []struct {
		name          string
		kind          string // "", "gz", "zst"
		first, second string // the list at the first and the second run
		interrupted   bool   // the first run stopped at its end, before it marked the list done
		wantNew       []string
		wantErr       bool
	}{
		{"a finished list that grew publishes the new lines", "", "a\nb\n", "a\nb\nc\nd\n", false, []string{"c", "d"}, false},
		{"a finished list rewritten with the same lines publishes nothing", "", "a\nb\n", "a\nb\n", false, nil, false},
		{"a finished list whose lines changed is refused", "", "a\nb\n", "a\nx\nc\n", false, nil, true},
		{"a finished list that shrank is refused", "", "a\nb\nc\n", "a\nb\n", false, nil, true},
		{"a finished list whose last line had no newline and was appended to is refused", "", "a\nb", "a\nbc\nd\n", false, nil, true},
		{"an interrupted list regenerated with other lines is refused", "", "key-1\nkey-2\n", "k-1\nkey-22\nkey-3\n", true, nil, true},
		{"an interrupted list that grew resumes", "", "a\nb\n", "a\nb\nc\n", true, []string{"c"}, false},
		{"a gzip list recompressed with more lines publishes the new ones", "gz", "a\nb\n", "a\nb\nc\n", false, []string{"c"}, false},
		{"a gzip list whose lines changed is refused", "gz", "a\nb\n", "a\nB\nc\n", false, nil, true},
		{"an interrupted zstd list regenerated with other lines is refused", "zst", "key-1\nkey-2\n", "k-1\nkey-22\nkey-3\n", true, nil, true},
		{"a zstd list recompressed with more lines publishes the new ones", "zst", "a\nb\n", "a\nb\nc\nd\n", false, []string{"c", "d"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			env := &service.Env{Names: n, JS: js, Log: slog.Default()}
			ctx := context.Background()
			file := filepath.Join(t.TempDir(), "keys.txt")
			if err := os.WriteFile(file, compress(t, tt.kind, tt.first), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := Config{Keys: *cli.NewStringSlice(file), InFlight: 4, HighWater: 1000}
			if _, err := Run(ctx, env, cfg); err != nil {
				t.Fatal(err)
			}
			kv, _ := js.KeyValue(ctx, n.KV)
			if tt.interrupted {
				interrupt(t, kv, checkpoint.ListKey(file))
			}
			before, _ := kv.Get(ctx, checkpoint.ListKey(file))
			if err := os.WriteFile(file, compress(t, tt.kind, tt.second), 0o644); err != nil {
				t.Fatal(err)
			}
			later := time.Now().Add(time.Hour) // a rewrite, whatever the file system's time resolution
			if err := os.Chtimes(file, later, later); err != nil {
				t.Fatal(err)
			}
			published := keysIn(t, js, n.Keys)

			st, err := Run(ctx, env, cfg)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "--restart") || !strings.Contains(err.Error(), "changed") ||
					strings.Contains(err.Error(), "\n") {
					t.Fatalf("second run = %+v, %v; want one line refusing the changed list and naming --restart", st, err)
				}
				if st.Published != 0 {
					t.Errorf("second run published %d keys of a refused list", st.Published)
				}
				if after, _ := kv.Get(ctx, checkpoint.ListKey(file)); after.Revision() != before.Revision() {
					t.Errorf("the refused list's checkpoint changed: %s", after.Value())
				}
				// --restart publishes it from the start.
				rcfg := cfg
				rcfg.Restart = true
				if st, err := Run(ctx, env, rcfg); err != nil || st.Lines != int64(strings.Count(tt.second, "\n")) {
					t.Errorf("--restart run = %+v, %v; want every line read", st, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("second run: %v", err)
			}
			got := keysIn(t, js, n.Keys)[len(published):]
			if strings.Join(got, ",") != strings.Join(tt.wantNew, ",") || st.Published != int64(len(tt.wantNew)) || st.Duplicates != 0 {
				t.Errorf("second run published %q (%+v), want %q", got, st, tt.wantNew)
			}
			// The checkpoint now describes the second list: a third run publishes nothing.
			if st, err := Run(ctx, env, cfg); err != nil || st.Published != 0 || st.SkippedFiles != 1 {
				t.Errorf("third run = %+v, %v; want the list skipped", st, err)
			}
		})
	}
}

// syncBuffer is a log destination safe for the producer's goroutines.
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

// TestRunOldCheckpoint: a checkpoint saved before lists had an identity is resumed by its offset,
// with one warning however many lists have one, and is saved with the list's identity after.
func TestRunOldCheckpoint(t *testing.T) {
	js, n := bustest.Job(t)
	var logs syncBuffer
	env := &service.Env{Names: n, JS: js, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := context.Background()
	dir := t.TempDir()
	kv, _ := js.KeyValue(ctx, n.KV)
	var files []string
	for _, name := range []string{"a.txt", "b.txt.gz", "done.txt"} {
		file := filepath.Join(dir, name)
		files = append(files, file)
		k := name[:1] // keys of their own: another list's would be duplicates
		if err := os.WriteFile(file, compress(t, strings.TrimPrefix(filepath.Ext(name), "."), k+"1\n"+k+"2\n"+k+"3\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		old := `{"path":"` + file + `","offset":3,"line":1,"done":false}` // as saved before identities
		if name == "done.txt" {
			old = `{"path":"` + file + `","offset":9,"line":3,"done":true}`
		}
		if _, err := kv.Put(ctx, checkpoint.ListKey(file), []byte(old)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := Run(ctx, env, Config{Keys: *cli.NewStringSlice(files...), InFlight: 4, HighWater: 1000, Parallel: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 4 || st.Lines != 4 || st.SkippedFiles != 1 {
		t.Errorf("stats = %+v, want k2 and k3 of two lists published, the finished one skipped", st)
	}
	if c := strings.Count(logs.String(), "level=WARN"); c != 1 || !strings.Contains(logs.String(), "identity") {
		t.Errorf("%d warnings, want one about checkpoints without a list identity:\n%s", c, logs.String())
	}
	for _, file := range files[:2] {
		e, err := kv.Get(ctx, checkpoint.ListKey(file))
		if err != nil {
			t.Fatal(err)
		}
		var cp map[string]any
		json.Unmarshal(e.Value(), &cp)
		if cp["done"] != true || cp["sha256"] == nil || cp["size"] == nil {
			t.Errorf("%s: checkpoint %s, want done, with the list's size and hash", file, e.Value())
		}
	}
}

// TestRunResumeHashState: a run stopped in the middle of a list saves the hash of what it read; a
// resumed run of the unchanged list hashes on from it without reading that part again, and the
// hash it saves at the end covers the whole list: a later run of the grown list accepts it.
func TestRunResumeHashState(t *testing.T) {
	js, n := bustest.Job(t)
	env := &service.Env{Names: n, JS: js, Log: slog.Default()}
	ctx := context.Background()
	var body strings.Builder
	const lines = 50
	for i := range lines {
		fmt.Fprintf(&body, "key-%05d\n", i)
	}
	file := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(file, []byte(body.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	kv, _ := js.KeyValue(ctx, n.KV)
	// A backlog over the high-water mark (nothing consumes KEYS) holds the run at its first
	// checkpoint, after line 1; stop it there.
	for i := range 101 {
		if _, err := js.PublishMsg(ctx, bus.KeyMsg(n, fmt.Sprint("backlog-", i), fmt.Sprint("backlog-", i), "test")); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Run(rctx, env, Config{Keys: *cli.NewStringSlice(file), InFlight: 64, HighWater: 100})
		done <- err
	}()
	var cp checkpoint.List
	for deadline := time.Now().Add(20 * time.Second); cp.Line < 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint: %+v", cp)
		}
		if e, err := kv.Get(ctx, checkpoint.ListKey(file)); err == nil {
			json.Unmarshal(e.Value(), &cp)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e, _ := kv.Get(ctx, checkpoint.ListKey(file))
	json.Unmarshal(e.Value(), &cp)
	if cp.Done || cp.Line != 1 || len(cp.HashState) == 0 {
		t.Fatalf("checkpoint %+v, want one in the middle of the list with a hash state", cp)
	}

	cfg := Config{Keys: *cli.NewStringSlice(file), InFlight: 64, HighWater: 1 << 40}
	st, err := Run(ctx, env, cfg)
	if err != nil || st.Lines != lines-cp.Line {
		t.Fatalf("resumed run = %+v, %v; want the %d lines after the checkpoint", st, err, lines-cp.Line)
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new-1\nnew-2\n")
	f.Close()
	st, err = Run(ctx, env, cfg)
	if err != nil || st.Published != 2 || st.Lines != 2 {
		t.Errorf("run of the grown list = %+v, %v; want its 2 new lines published", st, err)
	}
}
