package repair

import (
	"context"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/orphan"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Command is `ferry repair`.
func Command() *cli.Command {
	var stages cli.StringSlice
	var dryRun bool
	return &cli.Command{
		Name:  "repair",
		Usage: "requeue messages a NATS cluster failover left in a work queue where its consumer will never deliver them (ferry status shows them as ORPHANED)",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "stage", Destination: &stages, Usage: "only this stage's work queue (repeatable): fetcher, uploader, verifier, advisor or all (default: all)"},
			&cli.BoolFlag{Name: "dry-run", Destination: &dryRun, Usage: "list the orphaned messages (sequence and key); change nothing"},
		},
		Action: func(c *cli.Context) error {
			if err := CheckStages(stages.Value()); err != nil {
				return err
			}
			nc, js, n, err := service.ConnectJob(c.Context, c, "repair")
			if err != nil {
				return err
			}
			defer nc.Close()
			qs, err := Queues(n, stages.Value())
			if err != nil {
				return err
			}
			return Each(c.Context, js, n, qs, Options{DryRun: dryRun, Settle: DefaultSettle}, c.App.Writer)
		},
	}
}

// Each repairs each of qs in turn and writes a line per queue and a total to w; with o.DryRun,
// also a line per orphan. It stops at the first error, after a line of what it did in that queue.
func Each(ctx context.Context, js jetstream.JetStream, n bus.Names, qs []Queue, o Options, w io.Writer) error {
	if _, err := service.JobStream(ctx, js, n, n.Keys); err != nil {
		return err // a job that does not exist is a usage error, whichever --stage
	}
	total := 0
	for _, q := range qs {
		if o.DryRun {
			o.Found = func(m Orphan) {
				key := m.Key
				if key == "" {
					key = "(" + m.Subject + ")"
				}
				fmt.Fprintf(w, "%-8s  %s #%d  %s\n", q.Stage, q.Stream, m.Seq, key)
			}
		}
		r, err := Repair(ctx, js, n, q, o)
		if err != nil {
			if r.Orphaned > 0 { // what it did before the error
				fmt.Fprintln(w, Line(r, o.DryRun))
			}
			return err
		}
		fmt.Fprintln(w, Line(r, o.DryRun))
		total += r.Requeued
		if o.DryRun {
			total += r.Orphaned
		}
	}
	if o.DryRun {
		fmt.Fprintf(w, "would requeue %d orphaned messages (--dry-run: nothing changed)\n", total)
	} else {
		fmt.Fprintf(w, "requeued %d orphaned messages\n", total)
	}
	return nil
}

// Line is the one-line account of r.
func Line(r Result, dryRun bool) string {
	head := fmt.Sprintf("%-8s  %s: ", r.Stage, r.Stream)
	if r.NoConsumer {
		return head + fmt.Sprintf("no consumer %s (the stage never started); nothing to repair", r.Consumer)
	}
	bound := fmt.Sprintf("#%d, the consumer's ack floor", r.Bound)
	if r.Delivered {
		bound = fmt.Sprintf("#%d, the consumer's last delivered (nothing ack-pending)", r.Bound)
	}
	s := head
	switch {
	case r.Orphaned == 0:
		s += fmt.Sprintf("none orphaned (at or below %s)", bound)
	case dryRun:
		s += fmt.Sprintf("%d orphaned (at or below %s), would requeue %d", r.Orphaned, bound, r.Orphaned)
	default:
		s += fmt.Sprintf("%d orphaned (at or below %s), %d requeued", r.Orphaned, bound, r.Requeued)
	}
	if r.DeadLettered > 0 {
		s += fmt.Sprintf("; %d dead-lettered max_deliveries (orphaned again after %d requeues)", r.DeadLettered, orphan.MaxRequeues)
	}
	if r.AwaitAdvisor > 0 {
		s += fmt.Sprintf("; %d out of deliveries left to the advisor", r.AwaitAdvisor)
	}
	return s
}
