// Package throttle is `ferry throttle`: change the limits of every running fetcher or uploader of a
// job while they run. The setting lives in the job's KV (settings.throttle.<stage>); each process
// watches it and applies its share (limit / live processes of the stage) within a second.
package throttle

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bytesize"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Command is `ferry throttle`.
func Command() *cli.Command {
	var byteRate, oldByteRate float64 // --byte-rate, and its old name
	var (
		stageName string
		clear     bool
	)
	return &cli.Command{
		Name:      "throttle",
		Usage:     "change the limits of all running fetchers (or uploaders) of the job, live; each value is for all processes together",
		UsageText: "ferry throttle [--stage fetcher] --read-rate N --byte-rate B --concurrency C\n   ferry throttle --stage uploader --upload-rate N --byte-rate B --concurrency C\n   ferry throttle [--stage S] --clear",
		Description: "Flags not given keep their current value; 0 removes that limit. Without any flag it prints the\n" +
			"current setting. Every running process of the stage applies value / number of live processes.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "stage", Value: bus.StageFetcher, Destination: &stageName, Usage: "fetcher or uploader"},
			// The services' flag names (--read-rate, --upload-rate, --byte-rate), for all processes
			// together; the old names stay, hidden, for a release.
			&cli.Float64Flag{Name: "read-rate", Usage: "fetchers: Cassandra reads/s, all fetchers together"},
			&cli.Float64Flag{Name: "upload-rate", Usage: "uploaders: S3 PUTs/s, all uploaders together"},
			bytesize.RateFlag("byte-rate", "", &byteRate, "blob bytes/s read (fetcher) or uploaded (uploader), all processes together (200MB, 50MiB)"),
			&cli.Float64Flag{Name: "reads-per-sec", Aliases: []string{"reads"}, Hidden: true, Usage: "old name of --read-rate"},
			&cli.Float64Flag{Name: "uploads-per-sec", Hidden: true, Usage: "old name of --upload-rate"},
			&cli.GenericFlag{Name: "bytes-per-sec", Aliases: []string{"bytes"}, Hidden: true, Value: bytesize.Rate(&oldByteRate), Usage: "old name of --byte-rate"},
			&cli.IntFlag{Name: "concurrency", Usage: "handlers in flight, all processes together (each process stays under its own --concurrency)"},
			&cli.BoolFlag{Name: "clear", Destination: &clear, Usage: "remove the stage's throttle: each process goes back to its own flags"},
		},
		Action: func(c *cli.Context) error {
			if stageName != bus.StageFetcher && stageName != bus.StageUploader {
				return config.Invalid(fmt.Errorf("--stage %q: must be fetcher or uploader", stageName))
			}
			var errs []error
			rates := map[string]float64{}
			for name, old := range map[string]string{"read-rate": "reads-per-sec", "upload-rate": "uploads-per-sec", "byte-rate": "bytes-per-sec"} {
				switch {
				case name == "byte-rate" && c.IsSet(name):
					rates[name] = byteRate
				case name == "byte-rate" && c.IsSet(old):
					rates[name] = oldByteRate
				case c.IsSet(name):
					rates[name] = c.Float64(name)
				case c.IsSet(old):
					rates[name] = c.Float64(old)
				default:
					continue
				}
				if rates[name] < 0 {
					errs = append(errs, fmt.Errorf("--%s %g: must not be negative", name, rates[name]))
				}
			}
			if _, ok := rates["read-rate"]; ok && stageName != bus.StageFetcher {
				errs = append(errs, errors.New("--read-rate is for --stage fetcher; use --upload-rate"))
			}
			if _, ok := rates["upload-rate"]; ok && stageName != bus.StageUploader {
				errs = append(errs, errors.New("--upload-rate is for --stage uploader"))
			}
			if c.Int("concurrency") < 0 {
				errs = append(errs, fmt.Errorf("--concurrency %d: must not be negative", c.Int("concurrency")))
			}
			if err := errors.Join(errs...); err != nil {
				return config.Invalid(err)
			}
			// The job must exist: a mistyped --job is a usage error (exit 2), not a new job.
			nc, js, n, err := service.ConnectExistingJob(c.Context, c, "throttle")
			if err != nil {
				return err
			}
			defer nc.Close()
			kv, err := js.KeyValue(c.Context, n.KV)
			if err != nil {
				return fmt.Errorf("kv %s: %w (ferry setup creates it)", n.KV, err)
			}
			key := limit.ThrottleKey(stageName)
			var t limit.Throttle
			set := false
			if e, err := kv.Get(c.Context, key); err == nil {
				set = json.Unmarshal(e.Value(), &t) == nil // a bad value is replaced
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
				return fmt.Errorf("read %s: %w", key, err)
			}
			changed := false
			for _, f := range []string{"read-rate", "upload-rate"} {
				if v, ok := rates[f]; ok {
					t.PerSec, changed = v, true
				}
			}
			if v, ok := rates["byte-rate"]; ok {
				t.BytesPerSec, changed = v, true
			}
			if c.IsSet("concurrency") {
				t.Concurrency, changed = c.Int("concurrency"), true
			}
			switch {
			case clear:
				if err := kv.Delete(c.Context, key); err != nil {
					return fmt.Errorf("clear %s: %w", key, err)
				}
				fmt.Fprintf(c.App.Writer, "%s throttle of job %s cleared: each process uses its own flags\n", stageName, n.Job)
				return nil
			case changed:
				b, _ := json.Marshal(t)
				if _, err := kv.Put(c.Context, key, b); err != nil {
					return fmt.Errorf("set %s: %w", key, err)
				}
			}
			live, _ := limit.LiveProcesses(c.Context, kv, stageName)
			if !set && !changed {
				fmt.Fprintf(c.App.Writer, "%s throttle of job %s: none, each process uses its own flags; %d live %s(s)\n",
					stageName, n.Job, live, stageName)
				return nil
			}
			fmt.Fprintf(c.App.Writer, "%s throttle of job %s: %s; %d live %s(s), each applies 1/%d\n",
				stageName, n.Job, describe(t, stageName), live, stageName, max(live, 1))
			return nil
		},
	}
}

func describe(t limit.Throttle, stageName string) string {
	unit := "reads/s"
	if stageName == bus.StageUploader {
		unit = "uploads/s"
	}
	v := func(x float64) string {
		if x == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%.0f", x)
	}
	conc := "each process's own --concurrency"
	if t.Concurrency > 0 {
		conc = fmt.Sprint(t.Concurrency)
	}
	return fmt.Sprintf("%s %s, %s bytes/s, concurrency %s", v(t.PerSec), unit, v(t.BytesPerSec), conc)
}
