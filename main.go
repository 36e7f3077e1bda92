// Command ferry moves blobs out of Apache Cassandra into S3-compatible object storage through NATS
// JetStream. Each stage is a subcommand and runs as its own process; `ferry run` runs them all.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/advisor"
	"github.com/ferry-migrate/ferry/fetcher"
	"github.com/ferry-migrate/ferry/producer"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/tools/bench"
	"github.com/ferry-migrate/ferry/tools/console"
	"github.com/ferry-migrate/ferry/tools/diff"
	"github.com/ferry-migrate/ferry/tools/dlq"
	"github.com/ferry-migrate/ferry/tools/plan"
	"github.com/ferry-migrate/ferry/tools/prune"
	"github.com/ferry-migrate/ferry/tools/repair"
	"github.com/ferry-migrate/ferry/tools/report"
	"github.com/ferry-migrate/ferry/tools/run"
	"github.com/ferry-migrate/ferry/tools/seed"
	"github.com/ferry-migrate/ferry/tools/status"
	"github.com/ferry-migrate/ferry/tools/throttle"
	"github.com/ferry-migrate/ferry/uploader"
	"github.com/ferry-migrate/ferry/verifier"
)

func main() {
	// First signal: drain and finish in-flight work. A second one kills the process (default Go
	// behaviour once the context stops listening).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }()
	err := app().RunContext(ctx, hoistGlobals(os.Args, service.GlobalFlags()))
	service.Cleanup() // a ferry run store this command reached (--data)
	if err != nil {
		if errors.Is(err, diff.ErrDiffer) {
			os.Exit(1) // like diff(1): its summary said how
		}
		fmt.Fprintln(os.Stderr, "ferry:", err)
		if config.IsInvalid(err) {
			os.Exit(2) // a usage error: bad flag or configuration value
		}
		os.Exit(1)
	}
}

// usageErrors makes flag parsing errors of every command exit 2 with one line, not a help page.
func usageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		usageErrors(c.Subcommands)
	}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return config.Invalid(fmt.Errorf("%w (see: %s --help)", err, c.Command.HelpName))
}

func app() *cli.App {
	a := &cli.App{
		Name:    "ferry",
		Usage:   "move blobs from Cassandra to S3 through NATS JetStream, verified, nothing lost",
		Version: version,
		// The help flag by hand: urfave/cli adds it only with its own help command (helpCommand
		// replaces that).
		Flags: append(service.GlobalFlags(), cli.HelpFlag),
		Commands: []*cli.Command{
			setupCommand(),
			producer.Command(),
			fetcher.Command(),
			uploader.Command(),
			verifier.Command(),
			advisor.Command(),
			run.Command(),
			dlq.Command(),
			throttle.Command(),
			seed.Command(),
			bench.Command(),
			plan.Command(),
			diff.Command(),
			prune.Command(),
			status.Command(),
			console.Command(),
			report.Command(),
			manifest.Command(),
			repair.Command(),
			versionCommand(),
			completionCommand(),
			helpCommand(),
		},
		HideHelpCommand:      true, // helpCommand instead
		EnableBashCompletion: true,
		OnUsageError:         onUsageError,
	}
	usageErrors(a.Commands)
	withExamples("", a.Commands)
	withGlobalsHelp(service.GlobalFlags())
	return a
}

// setupCommand is `ferry setup`: create or update the job's streams, consumers and buckets.
func setupCommand() *cli.Command {
	var s bus.Settings
	var del, yes bool
	return &cli.Command{
		Name:  "setup",
		Usage: "create or update the job's streams, consumers and buckets (services create missing ones at start)",
		Flags: append(s.Flags(),
			&cli.BoolFlag{Name: "delete", Destination: &del, Usage: "delete the job instead: its streams, progress, dead letters and DONE record"},
			&cli.BoolFlag{Name: "yes", Destination: &yes, Usage: "confirm --delete"},
		),
		Action: func(c *cli.Context) error {
			if del {
				if !yes {
					return errors.New("--delete removes the job's progress and dead letters for good; add --yes to confirm")
				}
				nc, js, err := service.Connect(c.Context, c, "setup")
				if err != nil {
					return err
				}
				defer nc.Close()
				if err := config.ValidateJobName(c.String("job")); err != nil {
					return err
				}
				if err := bus.Delete(c.Context, js, bus.For(c.String("job"))); err != nil {
					return err
				}
				fmt.Printf("job %s deleted\n", c.String("job"))
				return nil
			}
			env, err := service.Open(c.Context, c, service.Options{Name: "setup", Settings: s, Update: true, OneShot: true})
			if err != nil {
				return err
			}
			defer env.Close()
			n := env.Names
			var streams []string
			for _, base := range []string{n.Keys, n.Blobs, n.Uploaded} {
				streams = append(streams, n.Streams(base)...)
			}
			streams = append(streams, n.Done, n.DLQ, n.Advisories, n.Pruned)
			fmt.Printf("job %s ready: streams %s, kv %s, object store %s\n", n.Job, strings.Join(streams, " "), n.KV, n.Objects)
			// Replicated streams: each stage's partitions led by different servers.
			moved, err := bus.SpreadLeaders(c.Context, env.JS, n)
			if len(moved) > 0 {
				fmt.Printf("leaders spread: %s\n", strings.Join(moved, ", "))
			}
			if err != nil {
				env.Log.Warn("some leaders stay where the cluster put them (run ferry setup again to retry)", "err", err)
			}
			return nil
		},
	}
}
