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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

func TestRun(t *testing.T) {
	js, n := bustest.Job(t)
	env := &service.Env{Names: n, JS: js, Log: slog.Default()}
	lines := []string{
		"\xef\xbb\xbfk1", "  k2  \r", "", "   ", "k1", // a BOM, then a duplicate of the first
		string([]byte{0xff, 'x'}),    // not UTF-8
		strings.Repeat("a", 1025),    // too long
		strings.Repeat("b", 100<<10), // longer than the read buffer
		"k3", "k\x01",                // control character
	}
	file := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil { // no final newline
		t.Fatal(err)
	}
	cfg := Config{Keys: *cli.NewStringSlice(file), InFlight: 2, HighWater: 1000}
	st, err := Run(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Lines: 10, Published: 3, Duplicates: 1, Invalid: 4, Blank: 2}
	if st != want {
		t.Errorf("stats = %+v, want %+v", st, want)
	}
	if got := bustest.Msgs(t, js, n.Keys); got != 3 {
		t.Errorf("KEYS holds %d, want 3", got)
	}
	if got := bustest.Msgs(t, js, n.DLQ); got != 4 {
		t.Errorf("DLQ holds %d, want 4", got)
	}
	// The checkpoint says done: a second run publishes nothing.
	kv, _ := js.KeyValue(context.Background(), n.KV)
	keys, _ := kv.Keys(context.Background())
	if len(keys) != 1 {
		t.Fatalf("checkpoints: %v", keys)
	}
	e, _ := kv.Get(context.Background(), keys[0])
	var cp checkpoint.List
	if err := json.Unmarshal(e.Value(), &cp); err != nil || !cp.Done || cp.Line != 10 {
		t.Errorf("checkpoint = %+v, %v; want done at line 10 (the end of the list)", cp, err)
	}
	st, err = Run(context.Background(), env, cfg)
	if err != nil || st.SkippedFiles != 1 || st.Published != 0 {
		t.Errorf("second run = %+v, %v; want the file skipped", st, err)
	}
}

// TestRunLists reads plain, gzip and zstd lists named by a glob, in parallel, and resumes a
// compressed list from a checkpoint in the middle of it.
func TestRunLists(t *testing.T) {
	dir := t.TempDir()
	var want []string
	write := func(name string, keys []string) {
		t.Helper()
		want = append(want, keys...)
		body := []byte(strings.Join(keys, "\n") + "\n")
		var buf bytes.Buffer
		switch filepath.Ext(name) {
		case ".gz":
			zw := gzip.NewWriter(&buf)
			zw.Write(body)
			zw.Close()
		case ".zst":
			zw, _ := zstd.NewWriter(&buf)
			zw.Write(body)
			zw.Close()
		default:
			buf.Write(body)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s-%04d", prefix, i))
		}
		return out
	}
	write("a.txt", keys("a", 300))
	write("b.txt.gz", keys("b", 400))
	write("c.txt.zst", keys("c", 500))

	tests := []struct {
		name       string
		resumeLine int64 // a checkpoint of c.txt.zst at this line; 0: none
		want       int64
	}{
		{"from the start", 0, 1200},
		{"a compressed list resumes at its checkpoint", 200, 1200 - 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			env := &service.Env{Names: n, JS: js, Log: slog.Default()}
			ctx := context.Background()
			if tt.resumeLine > 0 {
				kv, _ := js.KeyValue(ctx, n.KV)
				name := filepath.Join(dir, "c.txt.zst")
				offset := tt.resumeLine * int64(len("c-0000\n"))
				b, _ := json.Marshal(checkpoint.List{Path: name, Offset: offset, Line: tt.resumeLine})
				if _, err := kv.Put(ctx, checkpoint.ListKey(name), b); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{Keys: *cli.NewStringSlice(filepath.Join(dir, "*")), InFlight: 64, HighWater: 1 << 40, Parallel: 3}
			st, err := Run(ctx, env, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if st.Published != tt.want || st.Lines != tt.want {
				t.Errorf("stats = %+v, want %d read and published", st, tt.want)
			}
			if got := bustest.Msgs(t, js, n.Keys); got != uint64(tt.want) {
				t.Errorf("KEYS holds %d, want %d", got, tt.want)
			}
			kv, _ := js.KeyValue(ctx, n.KV)
			for _, f := range []string{"a.txt", "b.txt.gz", "c.txt.zst"} {
				e, err := kv.Get(ctx, checkpoint.ListKey(filepath.Join(dir, f)))
				var cp checkpoint.List
				if err != nil || json.Unmarshal(e.Value(), &cp) != nil || !cp.Done {
					t.Errorf("%s: checkpoint %+v, %v; want done", f, cp, err)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // part of the error; empty: valid
	}{
		{"keys", Config{Keys: *cli.NewStringSlice("k"), Parallel: 4, InFlight: 1, HighWater: 1}, ""},
		{"neither keys nor scan", Config{Parallel: 4, InFlight: 1, HighWater: 1}, "--keys"},
		{"both", Config{Keys: *cli.NewStringSlice("k"), Parallel: 4, InFlight: 1, HighWater: 1,
			Scan: ScanConfig{Enabled: true, Concurrency: 1, PageSize: 1, Consistency: "ONE"}}, "one or the other"},
		{"scan", Config{Parallel: 4, InFlight: 1, HighWater: 1,
			Scan: ScanConfig{Enabled: true, Concurrency: 4, PageSize: 1000, Consistency: "LOCAL_ONE"}}, ""},
		{"bad scan", Config{Parallel: 4, InFlight: 1, HighWater: 1,
			Scan: ScanConfig{Enabled: true, Concurrency: 0, PageSize: 0, Consistency: "MOST", Rate: -1, Ranges: -1}},
			"--scan-concurrency"},
		{"parallel", Config{Keys: *cli.NewStringSlice("k"), Parallel: 0, InFlight: 1, HighWater: 1}, "--parallel"},
		{"delta", Config{Parallel: 4, InFlight: 1, HighWater: 1,
			Scan: ScanConfig{Enabled: true, Concurrency: 4, PageSize: 1000, Consistency: "LOCAL_ONE", Since: "last", SinceMargin: time.Minute}}, ""},
		{"bad since", Config{Parallel: 4, InFlight: 1, HighWater: 1,
			Scan: ScanConfig{Enabled: true, Concurrency: 4, PageSize: 1000, Consistency: "LOCAL_ONE", Since: "monday"}}, `--since "monday"`},
		{"negative margin", Config{Parallel: 4, InFlight: 1, HighWater: 1,
			Scan: ScanConfig{Enabled: true, Concurrency: 4, PageSize: 1000, Consistency: "LOCAL_ONE", Since: "1", SinceMargin: -time.Second}}, "--since-margin"},
		{"since without scan", Config{Keys: *cli.NewStringSlice("k"), Parallel: 4, InFlight: 1, HighWater: 1, Scan: ScanConfig{Since: "1"}}, "--since: only with --scan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one about %s", err, tt.want)
			case err != nil && !config.IsInvalid(err):
				t.Errorf("error %v is not a configuration error (exit 2)", err)
			}
		})
	}
}

// keysIn is the bodies (source keys) of the messages in a stream, in order.
func keysIn(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("%s #%d: %v", stream, seq, err)
		}
		out = append(out, string(m.Data))
	}
	return out
}

// TestRunKeyTrim: only ASCII space, tab and CR around a line (and a BOM starting the list) are not
// part of its key; any other whitespace is, so keys differing only by it stay distinct.
func TestRunKeyTrim(t *testing.T) {
	tests := []struct {
		name    string
		list    string
		keys    []string // in KEYS, in order
		invalid int64
	}{
		{"NBSP is part of the key", "photo.jpg\nphoto.jpg\u00a0\n", []string{"photo.jpg", "photo.jpg\u00a0"}, 0},
		{"em space, ideographic space and NEL are kept", "other.jpg\u2003\n\u3000x\ny\u0085\n",
			[]string{"other.jpg\u2003", "\u3000x", "y\u0085"}, 0},
		{"ASCII space, tab and CR are trimmed", " \tk1\t \r\nk2\r\n", []string{"k1", "k2"}, 0},
		{"a BOM only at the start of the list", "\ufeffk1\n\ufeffk2\n", []string{"k1", "\ufeffk2"}, 0},
		{"vertical tab and form feed are key bytes (control characters: invalid)", "\vk\f\nk\n", []string{"k"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			env := &service.Env{Names: n, JS: js, Log: slog.Default()}
			file := filepath.Join(t.TempDir(), "keys.txt")
			if err := os.WriteFile(file, []byte(tt.list), 0o644); err != nil {
				t.Fatal(err)
			}
			st, err := Run(context.Background(), env, Config{Keys: *cli.NewStringSlice(file), InFlight: 4, HighWater: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if got := keysIn(t, js, n.Keys); !slices.Equal(got, tt.keys) {
				t.Errorf("KEYS = %q, want %q", got, tt.keys)
			}
			if st.Invalid != tt.invalid || st.Published != int64(len(tt.keys)) {
				t.Errorf("stats = %+v, want %d published and %d invalid", st, len(tt.keys), tt.invalid)
			}
		})
	}
}
