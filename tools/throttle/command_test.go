package throttle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/service"
)

// run runs `ferry throttle args...` against job "t" at url and returns what it printed.
func run(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := Command()
	// As main does: a flag ferry cannot parse is a usage error.
	cmd.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return config.Invalid(err) }
	app := &cli.App{Name: "ferry", Flags: service.GlobalFlags(), Commands: []*cli.Command{cmd},
		Writer: &out, ErrWriter: &out, ExitErrHandler: func(*cli.Context, error) {}}
	err := app.Run(append([]string{"ferry", "--nats", url, "--job", "t", "--log-level", "error", "throttle"}, args...))
	return out.String(), err
}

// stored is the stage's throttle in the job's KV; nil when none is set.
func stored(t *testing.T, kv jetstream.KeyValue, stage string) *limit.Throttle {
	t.Helper()
	e, err := kv.Get(context.Background(), limit.ThrottleKey(stage))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var th limit.Throttle
	if err := json.Unmarshal(e.Value(), &th); err != nil {
		t.Fatal(err)
	}
	return &th
}

// TestFlagsRefused: a wrong stage, a rate for the other stage or a negative value is a usage error
// and changes nothing.
func TestFlagsRefused(t *testing.T) {
	url, js, n := bustest.JobAt(t)
	kv, err := js.KeyValue(context.Background(), n.KV)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"--stage", "verifier", "--concurrency", "3"}, `--stage "verifier": must be fetcher or uploader`},
		{[]string{"--upload-rate", "5"}, "--upload-rate is for --stage uploader"},
		{[]string{"--stage", "uploader", "--read-rate", "5"}, "--read-rate is for --stage fetcher"},
		{[]string{"--reads", "-1"}, "--read-rate -1: must not be negative"},
		{[]string{"--stage", "uploader", "--bytes", "-2"}, `"-2": a size must be between 0 and 8EiB`},
		{[]string{"--byte-rate", "lots"}, `"lots" is not a size`},
		{[]string{"--concurrency", "-3"}, "--concurrency -3: must not be negative"},
	} {
		_, err := run(t, url, tc.args...)
		if !config.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want a usage error holding %q", tc.args, err, tc.want)
		}
	}
	for _, s := range []string{bus.StageFetcher, bus.StageUploader} {
		if th := stored(t, kv, s); th != nil {
			t.Errorf("refused flags stored a %s throttle: %+v", s, *th)
		}
	}
}

// TestSetKeepClear: each call changes only the flags it is given and keeps the rest; 0 removes a
// limit; --clear removes the stage's setting; the stages' settings are separate; without flags it
// prints the current setting.
func TestSetKeepClear(t *testing.T) {
	url, js, n := bustest.JobAt(t)
	kv, err := js.KeyValue(context.Background(), n.KV)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args            []string
		fetcher, upload *limit.Throttle // stored afterwards
		out             string          // in what it printed
	}{
		{nil, nil, nil, "fetcher throttle of job t: none, each process uses its own flags; 0 live fetcher(s)"},
		{[]string{"--read-rate", "100"}, &limit.Throttle{PerSec: 100}, nil,
			"fetcher throttle of job t: 100 reads/s, unlimited bytes/s, concurrency each process's own --concurrency; 0 live fetcher(s), each applies 1/1"},
		{[]string{"--bytes", "5000", "--concurrency", "8"}, &limit.Throttle{PerSec: 100, BytesPerSec: 5000, Concurrency: 8}, nil,
			"100 reads/s, 5000 bytes/s, concurrency 8"},
		{[]string{"--stage", "uploader", "--upload-rate", "7"}, &limit.Throttle{PerSec: 100, BytesPerSec: 5000, Concurrency: 8}, &limit.Throttle{PerSec: 7},
			"uploader throttle of job t: 7 uploads/s"},
		{[]string{"--reads", "0"}, &limit.Throttle{BytesPerSec: 5000, Concurrency: 8}, &limit.Throttle{PerSec: 7},
			"unlimited reads/s, 5000 bytes/s"},
		{nil, &limit.Throttle{BytesPerSec: 5000, Concurrency: 8}, &limit.Throttle{PerSec: 7}, "unlimited reads/s, 5000 bytes/s, concurrency 8"},
		{[]string{"--clear"}, nil, &limit.Throttle{PerSec: 7}, "fetcher throttle of job t cleared: each process uses its own flags"},
		{[]string{"--stage", "uploader", "--clear"}, nil, nil, "uploader throttle of job t cleared"},
	} {
		out, err := run(t, url, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if !strings.Contains(out, tc.out) {
			t.Errorf("%v printed %q, want it to hold %q", tc.args, out, tc.out)
		}
		for _, c := range []struct {
			stage string
			want  *limit.Throttle
		}{{bus.StageFetcher, tc.fetcher}, {bus.StageUploader, tc.upload}} {
			got := stored(t, kv, c.stage)
			if (got == nil) != (c.want == nil) || got != nil && *got != *c.want {
				t.Errorf("%v: %s throttle %+v, want %+v", tc.args, c.stage, got, c.want)
			}
		}
	}
}

// TestBadValueReplaced: a stored value that is not a throttle is replaced by the flags given.
func TestBadValueReplaced(t *testing.T) {
	url, js, n := bustest.JobAt(t)
	kv, err := js.KeyValue(context.Background(), n.KV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), limit.ThrottleKey(bus.StageFetcher), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, url, "--concurrency", "4"); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, kv, bus.StageFetcher); got == nil || *got != (limit.Throttle{Concurrency: 4}) {
		t.Errorf("stored %+v, want concurrency 4 alone", got)
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		th    limit.Throttle
		stage string
		want  string
	}{
		{limit.Throttle{}, bus.StageFetcher, "unlimited reads/s, unlimited bytes/s, concurrency each process's own --concurrency"},
		{limit.Throttle{PerSec: 2.6, BytesPerSec: 1 << 20, Concurrency: 3}, bus.StageUploader, "3 uploads/s, 1048576 bytes/s, concurrency 3"},
	} {
		if got := describe(tc.th, tc.stage); got != tc.want {
			t.Errorf("describe(%+v, %s) = %q, want %q", tc.th, tc.stage, got, tc.want)
		}
	}
}

// TestByteRateUnits: --byte-rate takes a size per second, and the old --bytes-per-sec too.
func TestByteRateUnits(t *testing.T) {
	url, js, n := bustest.JobAt(t)
	kv, err := js.KeyValue(context.Background(), n.KV)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want float64
	}{
		{[]string{"--byte-rate", "50MiB"}, 50 << 20},
		{[]string{"--bytes-per-sec", "200MB"}, 200e6},
		{[]string{"--byte-rate", "1000"}, 1000},
	} {
		if out, err := run(t, url, tc.args...); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, out)
		}
		if th := stored(t, kv, bus.StageFetcher); th == nil || th.BytesPerSec != tc.want {
			t.Errorf("%v: stored %+v, want %g bytes/s", tc.args, th, tc.want)
		}
	}
}
