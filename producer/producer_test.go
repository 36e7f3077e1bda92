package producer

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bustest"
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
	var cp Checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil || !cp.Done || cp.Line != 9 {
		t.Errorf("checkpoint = %+v, %v; want done at line 9 (the last published key)", cp, err)
	}
	st, err = Run(context.Background(), env, cfg)
	if err != nil || st.SkippedFiles != 1 || st.Published != 0 {
		t.Errorf("second run = %+v, %v; want the file skipped", st, err)
	}
}
