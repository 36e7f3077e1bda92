// Package dlq is `ferry dlq`: list the job's dead letters by stage and reason, export their keys,
// and replay them into KEYS once their cause is fixed.
package dlq

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Replay publishes the selected dead letters' keys to KEYS and removes each from the DLQ once its
// publish is stored. A replayed key gets a fresh Ferry-Id (derived from its DLQ entry), so the
// broker's duplicate window does not drop it; a replay that is interrupted and run again dedupes.
func Replay(ctx context.Context, js jetstream.JetStream, n bus.Names, f deadletter.Filter, limit int, dryRun bool) (int, error) {
	s, err := js.Stream(ctx, n.DLQ)
	if err != nil {
		return 0, fmt.Errorf("dlq: stream %s: %w", n.DLQ, err)
	}
	return deadletter.Each(ctx, js, n, f, limit, func(e deadletter.Entry) error {
		if dryRun {
			return nil
		}
		id := bus.KeyID(n.Job, e.Key) + ".r" + strconv.FormatUint(e.Seq, 10)
		m := bus.KeyMsg(n, e.Key, id, fmt.Sprintf("dlq#%d %s/%s", e.Seq, e.Stage, e.Reason))
		stream, _ := n.Route(n.Keys, id)
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(bus.MsgID("keys", id)), jetstream.WithExpectStream(stream)); err != nil {
			return fmt.Errorf("dlq: replay key %q: %w", e.Key, err)
		}
		if err := s.DeleteMsg(ctx, e.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("dlq: remove replayed entry #%d (key %q): %w", e.Seq, e.Key, err)
		}
		return nil
	})
}

// job is the connection to an existing job.
type job struct {
	nc    *nats.Conn
	JS    jetstream.JetStream
	Names bus.Names
}

// Close drains the connection, so a replay's last publishes and deletes are flushed.
func (j *job) Close() {
	if err := j.nc.Drain(); err != nil {
		j.nc.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); !j.nc.IsClosed() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	j.nc.Close()
}

// Command is `ferry dlq`.
func Command() *cli.Command {
	var f deadletter.Filter
	var stageFlag, reasonFlag cli.StringSlice
	filterFlags := []cli.Flag{
		&cli.StringSliceFlag{Name: "stage", Destination: &stageFlag, Usage: "only dead letters of this stage (repeatable)"},
		&cli.StringSliceFlag{Name: "reason", Destination: &reasonFlag, Usage: "only dead letters with this reason (repeatable): " + strings.Join(bus.Reasons, ", ")},
	}
	// open connects to the job without setting anything up: a mistyped --job is a usage error
	// (exit 2), not a new job.
	open := func(c *cli.Context) (*job, error) {
		f = deadletter.Filter{Stages: stageFlag.Value(), Reasons: reasonFlag.Value()}
		if err := f.Validate(); err != nil {
			return nil, err
		}
		nc, js, n, err := service.ConnectExistingJob(c.Context, c, "dlq")
		if err != nil {
			return nil, err
		}
		return &job{nc: nc, JS: js, Names: n}, nil
	}
	var out string
	var limit int
	var dryRun bool
	return &cli.Command{
		Name:  "dlq",
		Usage: "list, export and replay the job's dead letters",
		Subcommands: []*cli.Command{
			{
				Name: "ls", Usage: "count dead letters by stage and reason",
				Action: func(c *cli.Context) error {
					env, err := open(c)
					if err != nil {
						return err
					}
					defer env.Close()
					counts, err := deadletter.Count(c.Context, env.JS, env.Names)
					if err != nil {
						return err
					}
					counts.Print(c.App.Writer)
					return nil
				},
			},
			{
				Name: "export", Usage: "write dead letters as lines: key<TAB>stage<TAB>reason<TAB>attempts<TAB>error; control and invisible characters and backslashes as Go escapes (\\t, \\x1b, \\u0085, \\\\) unless --raw",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Value: "-", Destination: &out, Usage: "file to write; - for stdout"},
					&cli.BoolFlag{Name: "raw", Usage: "write the fields as stored, escaping nothing: a tab, CR or escape sequence in a key reaches the file or terminal as is"},
				}, filterFlags...),
				Action: func(c *cli.Context) error {
					env, err := open(c)
					if err != nil {
						return err
					}
					defer env.Close()
					w := c.App.Writer
					if out != "-" {
						file, err := os.Create(out)
						if err != nil {
							return fmt.Errorf("dlq export: %w", err)
						}
						defer file.Close()
						w = file
					}
					bw := bufio.NewWriter(w)
					esc := Escape // every field: a forged dead letter's headers are not to be trusted either
					if c.Bool("raw") {
						esc = func(s string) string { return s }
					}
					k, err := deadletter.Each(c.Context, env.JS, env.Names, f, 0, func(e deadletter.Entry) error {
						_, err := fmt.Fprintf(bw, "%s\t%s\t%s\t%s\t%s\n", esc(e.Key), esc(e.Stage), esc(e.Reason), esc(e.Attempt), esc(e.Err))
						return err
					})
					if ferr := bw.Flush(); err == nil {
						err = ferr
					}
					fmt.Fprintf(c.App.ErrWriter, "exported %d dead letters\n", k)
					return err
				},
			},
			{
				Name: "replay", Usage: "send dead letters' keys back to KEYS and remove them from the DLQ",
				Flags: append([]cli.Flag{
					&cli.IntFlag{Name: "limit", Destination: &limit, Usage: "replay at most this many (0: all)"},
					&cli.BoolFlag{Name: "dry-run", Destination: &dryRun, Usage: "count what would be replayed; change nothing"},
				}, filterFlags...),
				Action: func(c *cli.Context) error {
					env, err := open(c)
					if err != nil {
						return err
					}
					defer env.Close()
					k, err := Replay(c.Context, env.JS, env.Names, f, limit, dryRun)
					verb := "replayed"
					if dryRun {
						verb = "would replay"
					}
					fmt.Fprintf(c.App.Writer, "%s %d dead letters\n", verb, k)
					return err
				},
			},
		},
	}
}
