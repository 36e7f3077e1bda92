// Package dlq is `ferry dlq`: list the job's dead letters by stage and reason, export their keys,
// and replay them into KEYS once their cause is fixed.
package dlq

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Filter selects dead letters; empty lists select all.
type Filter struct {
	Stages, Reasons []string
}

var stages = []string{bus.StageProducer, bus.StageFetcher, bus.StageUploader, bus.StageVerifier, bus.StageAdvisor}

// Validate checks every stage and reason is a known one.
func (f Filter) Validate() error {
	var errs []error
	for _, s := range f.Stages {
		if !slices.Contains(stages, s) {
			errs = append(errs, fmt.Errorf("--stage %q: want one of %s", s, strings.Join(stages, ", ")))
		}
	}
	for _, r := range f.Reasons {
		if !slices.Contains(bus.Reasons, r) {
			errs = append(errs, fmt.Errorf("--reason %q: want one of %s", r, strings.Join(bus.Reasons, ", ")))
		}
	}
	return config.Invalid(errors.Join(errs...))
}

// Subjects are the DLQ subjects the filter selects.
func (f Filter) Subjects(n bus.Names) []string {
	st, rs := f.Stages, f.Reasons
	if len(st) == 0 {
		st = []string{"*"}
	}
	if len(rs) == 0 {
		rs = []string{"*"}
	}
	var out []string
	for _, s := range st {
		for _, r := range rs {
			out = append(out, n.DLQSubject(s, r))
		}
	}
	return out
}

// Counts are dead letters by "stage/reason".
type Counts map[string]uint64

// Count counts the job's dead letters by stage and reason.
func Count(ctx context.Context, js jetstream.JetStream, n bus.Names) (Counts, error) {
	s, err := js.Stream(ctx, n.DLQ)
	if err != nil {
		return nil, fmt.Errorf("dlq: stream %s: %w", n.DLQ, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(n.DLQSubjects))
	if err != nil {
		return nil, fmt.Errorf("dlq: stream info %s: %w", n.DLQ, err)
	}
	c := Counts{}
	prefix := "ferry." + n.Job + ".dlq."
	for subj, k := range info.State.Subjects {
		c[strings.Replace(strings.TrimPrefix(subj, prefix), ".", "/", 1)] += k
	}
	return c, nil
}

// Total is the number of dead letters.
func (c Counts) Total() uint64 {
	var t uint64
	for _, k := range c {
		t += k
	}
	return t
}

// Print writes the counts as a table.
func (c Counts) Print(w io.Writer) {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tREASON\tKEYS")
	for _, k := range keys {
		st, r, _ := strings.Cut(k, "/")
		fmt.Fprintf(tw, "%s\t%s\t%d\n", st, r, c[k])
	}
	fmt.Fprintf(tw, "total\t\t%d\n", c.Total())
	tw.Flush()
}

// Entry is one dead letter as read back.
type Entry struct {
	Seq                         uint64
	Key                         string
	Stage, Reason, Err, Attempt string
	Origin                      string
}

// Each calls fn for every dead letter the filter selects, oldest first, up to limit (0: all).
func Each(ctx context.Context, js jetstream.JetStream, n bus.Names, f Filter, limit int, fn func(Entry) error) (int, error) {
	s, err := js.Stream(ctx, n.DLQ)
	if err != nil {
		return 0, fmt.Errorf("dlq: stream %s: %w", n.DLQ, err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: f.Subjects(n)})
	if err != nil {
		return 0, fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
	}
	if info.NumPending == 0 {
		return 0, nil
	}
	done := 0
	for limit == 0 || done < limit {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return done, fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return done, err
		}
		h := msg.Headers()
		if err := fn(Entry{Seq: md.Sequence.Stream, Key: string(msg.Data()), Stage: h.Get(bus.HdrStage),
			Reason: h.Get(bus.HdrReason), Err: h.Get(bus.HdrError), Attempt: h.Get(bus.HdrAttempts),
			Origin: h.Get(bus.HdrOrigin)}); err != nil {
			return done, err
		}
		done++
		if md.NumPending == 0 {
			break
		}
	}
	return done, nil
}

// Replay publishes the selected dead letters' keys to KEYS and removes each from the DLQ once its
// publish is stored. A replayed key gets a fresh Ferry-Id (derived from its DLQ entry), so the
// broker's duplicate window does not drop it; a replay that is interrupted and run again dedupes.
func Replay(ctx context.Context, js jetstream.JetStream, n bus.Names, f Filter, limit int, dryRun bool) (int, error) {
	s, err := js.Stream(ctx, n.DLQ)
	if err != nil {
		return 0, fmt.Errorf("dlq: stream %s: %w", n.DLQ, err)
	}
	return Each(ctx, js, n, f, limit, func(e Entry) error {
		if dryRun {
			return nil
		}
		id := bus.KeyID(n.Job, e.Key) + ".r" + strconv.FormatUint(e.Seq, 10)
		m := bus.KeyMsg(n, e.Key, id, fmt.Sprintf("dlq#%d %s/%s", e.Seq, e.Stage, e.Reason))
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(bus.MsgID("keys", id)), jetstream.WithExpectStream(n.Keys)); err != nil {
			return fmt.Errorf("dlq: replay key %q: %w", e.Key, err)
		}
		if err := s.DeleteMsg(ctx, e.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("dlq: remove replayed entry #%d (key %q): %w", e.Seq, e.Key, err)
		}
		return nil
	})
}

// Command is `ferry dlq`.
func Command() *cli.Command {
	var f Filter
	var stageFlag, reasonFlag cli.StringSlice
	filterFlags := []cli.Flag{
		&cli.StringSliceFlag{Name: "stage", Destination: &stageFlag, Usage: "only dead letters of this stage (repeatable)"},
		&cli.StringSliceFlag{Name: "reason", Destination: &reasonFlag, Usage: "only dead letters with this reason (repeatable): " + strings.Join(bus.Reasons, ", ")},
	}
	open := func(c *cli.Context) (*service.Env, error) {
		f = Filter{Stages: stageFlag.Value(), Reasons: reasonFlag.Value()}
		if err := f.Validate(); err != nil {
			return nil, err
		}
		return service.Open(c.Context, c, service.Options{Name: "dlq", Settings: bus.DefaultSettings()})
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
					counts, err := Count(c.Context, env.JS, env.Names)
					if err != nil {
						return err
					}
					counts.Print(os.Stdout)
					return nil
				},
			},
			{
				Name: "export", Usage: "write dead letters as lines: key<TAB>stage<TAB>reason<TAB>attempts<TAB>error",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Value: "-", Destination: &out, Usage: "file to write; - for stdout"},
				}, filterFlags...),
				Action: func(c *cli.Context) error {
					env, err := open(c)
					if err != nil {
						return err
					}
					defer env.Close()
					w := io.Writer(os.Stdout)
					if out != "-" {
						file, err := os.Create(out)
						if err != nil {
							return fmt.Errorf("dlq export: %w", err)
						}
						defer file.Close()
						w = file
					}
					bw := bufio.NewWriter(w)
					k, err := Each(c.Context, env.JS, env.Names, f, 0, func(e Entry) error {
						_, err := fmt.Fprintf(bw, "%s\t%s\t%s\t%s\t%s\n", e.Key, e.Stage, e.Reason, e.Attempt, e.Err)
						return err
					})
					if ferr := bw.Flush(); err == nil {
						err = ferr
					}
					fmt.Fprintf(os.Stderr, "exported %d dead letters\n", k)
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
					fmt.Printf("%s %d dead letters\n", verb, k)
					return err
				},
			},
		},
	}
}
