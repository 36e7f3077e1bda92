package progress

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestBar(t *testing.T) {
	tests := []struct {
		f    float64
		want string
	}{
		{0, "[..........]   0.0%"},
		{0.5, "[#####.....]  50.0%"},
		{1, "[##########] 100.0%"},
		{-1, "[    ?     ]      "},
	}
	for _, tt := range tests {
		if got := Bar(tt.f, 10); got != tt.want {
			t.Errorf("Bar(%v) = %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestETA(t *testing.T) {
	tests := []struct {
		name              string
		base, done, total float64
		want              string
	}{
		{"half done in 10s", 0, 50, 100, "10s"},
		{"resumed at 40, 50 after 10s", 40, 50, 100, "50s"},
		{"nothing yet", 0, 0, 100, "?"},
		{"unknown total", 0, 10, 0, "?"},
		{"finished", 0, 100, 100, "0s"},
	}
	for _, tt := range tests {
		if got := ETA(10*time.Second, tt.base, tt.done, tt.total); got != tt.want {
			t.Errorf("%s: ETA = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestReporter(t *testing.T) {
	for _, tty := range []bool{true, false} {
		var out, logs bytes.Buffer
		r := Start("job", func() Status { return Status{Done: 1, Total: 4, Text: "1 of 4"} },
			Options{Out: &out, TTY: &tty, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		r.Stop()
		r.Stop() // twice is fine
		if tty && (!strings.Contains(out.String(), "job [") || !strings.Contains(out.String(), "25.0% 1 of 4\x1b[K\n")) {
			t.Errorf("terminal output %q", out.String())
		}
		if !tty && (out.Len() != 0 || !strings.Contains(logs.String(), `msg="job: 1 of 4"`) || !strings.Contains(logs.String(), "percent=25.0")) {
			t.Errorf("log output %q, terminal output %q", logs.String(), out.String())
		}
	}
}

// TestReporterTTYOnly: with TTYOnly, a terminal gets its bar and anything else nothing.
func TestReporterTTYOnly(t *testing.T) {
	for _, tty := range []bool{true, false} {
		var out, logs bytes.Buffer
		r := Start("diff", func() Status { return Status{Text: "sorting"} },
			Options{Out: &out, TTY: &tty, Log: slog.New(slog.NewTextHandler(&logs, nil)), TTYOnly: true})
		r.Stop()
		if got := out.Len() > 0; got != tty || logs.Len() != 0 {
			t.Errorf("tty %v: terminal output %q, logs %q", tty, out.String(), logs.String())
		}
	}
}
