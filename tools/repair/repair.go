// Package repair is `ferry repair`: it finds the messages a NATS cluster bug left behind in a
// work queue, which its consumer will never deliver (nats-server #4736, #7680: after a consumer
// leader change the ack floor can move past a message the work queue still holds), and requeues
// each of them: a copy to the same subject first, then the original is deleted. The work is
// shared/orphan's, which every service's sweeper also runs once a minute; `ferry repair` is for
// now, for a dry run, and for deployments whose services are all stopped.
package repair

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/orphan"
	"github.com/ferry-migrate/ferry/shared/service"
)

// The types and rules of orphaned messages, under the names `ferry repair` has always used.
type (
	Queue   = orphan.Queue
	Options = orphan.Options
	Orphan  = orphan.Orphan
	Result  = orphan.Result
)

// DefaultSettle is Options.Settle of `ferry repair`.
const DefaultSettle = orphan.DefaultSettle

// Bound is orphan.Bound: the highest sequence a consumer will provably never deliver again.
func Bound(ci *jetstream.ConsumerInfo) (uint64, bool) { return orphan.Bound(ci) }

// ID is orphan.ID: the Nats-Msg-Id of a requeued copy.
func ID(id string, seq uint64) string { return orphan.ID(id, seq) }

// Stages are the stages whose work queue can be repaired, in pipeline order.
var Stages = []string{bus.StageFetcher, bus.StageUploader, bus.StageVerifier, bus.StageAdvisor}

// Queues returns the work queues of the named stages, in pipeline order; none, or "all", names
// every one. An unknown name is a usage error.
func Queues(n bus.Names, stages []string) ([]Queue, error) {
	if err := CheckStages(stages); err != nil {
		return nil, err
	}
	all := orphan.Queues(n)
	if len(stages) == 0 || slices.Contains(stages, "all") {
		return all, nil
	}
	var qs []Queue
	for _, q := range all {
		if slices.Contains(stages, q.Stage) {
			qs = append(qs, q)
		}
	}
	return qs, nil
}

// CheckStages checks every name is one of Stages or "all".
func CheckStages(stages []string) error {
	var errs []error
	for _, s := range stages {
		if s != "all" && !slices.Contains(Stages, s) {
			errs = append(errs, fmt.Errorf("--stage %q: want one of %s or all", s, strings.Join(Stages, ", ")))
		}
	}
	return config.Invalid(errors.Join(errs...))
}

// Repair requeues the orphaned messages of q (only finds them with o.DryRun). A job without
// streams is a usage error (service.JobNotFound), and nothing is created.
func Repair(ctx context.Context, js jetstream.JetStream, n bus.Names, q Queue, o Options) (Result, error) {
	if _, err := service.JobStream(ctx, js, n, q.Stream); err != nil {
		return Result{Queue: q}, err
	}
	r, err := orphan.Requeue(ctx, js, n, q, o)
	if err != nil {
		return r, fmt.Errorf("repair: %w", err)
	}
	return r, nil
}
