package status

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/progress"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Interval is how often --watch redraws.
const Interval = 2 * time.Second

// Command is `ferry status`.
func Command() *cli.Command {
	var watch, asJSON bool
	return &cli.Command{
		Name:  "status",
		Usage: "show the job's backlog per stage, verified rate, dead letters, producer position and ETA (reads NATS only)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Destination: &watch, Usage: "redraw every 2 s until interrupted (with per-stage rates)"},
			&cli.BoolFlag{Name: "json", Destination: &asJSON, Usage: "print JSON (one document per snapshot) for scripts"},
		},
		Action: func(c *cli.Context) error {
			nc, js, n, err := service.ConnectJob(c.Context, c, "status")
			if err != nil {
				return err
			}
			defer nc.Close()
			return Watch(c.Context, js, n, os.Stdout, watch, asJSON, progress.IsTerminal(os.Stdout))
		},
	}
}

// Watch writes one snapshot, or with watch one every Interval until ctx ends. On a terminal each
// snapshot replaces the last (ANSI clear); otherwise they follow each other.
func Watch(ctx context.Context, js jetstream.JetStream, n bus.Names, w io.Writer, watch, asJSON, terminal bool) error {
	var rates Rates
	t := time.NewTicker(Interval)
	defer t.Stop()
	for first := true; ; first = false {
		st, err := Collect(ctx, js, n, time.Now())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		rates.Apply(st)
		switch {
		case asJSON:
			if err := JSON(w, st); err != nil {
				return err
			}
		case watch && terminal:
			fmt.Fprint(w, "\033[H\033[2J")
			Print(w, st)
		default:
			if !first {
				fmt.Fprintln(w)
			}
			Print(w, st)
		}
		if !watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
