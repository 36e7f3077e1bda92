package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// ConnectJob connects to the --nats server for the --job of c, without setting anything up
// (unlike Open): commands that only read a job must not create one by mistyping its name.
func ConnectJob(ctx context.Context, c *cli.Context, name string) (*nats.Conn, jetstream.JetStream, bus.Names, error) {
	job := c.String("job")
	if err := config.ValidateJobName(job); err != nil {
		return nil, nil, bus.Names{}, fmt.Errorf("--job: %w", err)
	}
	nc, js, err := Connect(ctx, c, name)
	if err != nil {
		return nil, nil, bus.Names{}, err
	}
	n, err := bus.Discover(ctx, js, bus.For(job), 0)
	if err != nil {
		nc.Close()
		return nil, nil, bus.Names{}, err
	}
	return nc, js, n, nil
}

// ConnectExistingJob is ConnectJob for a job that must exist already: a misspelt --job is
// JobNotFound (exit 2), with nothing created.
func ConnectExistingJob(ctx context.Context, c *cli.Context, name string) (*nats.Conn, jetstream.JetStream, bus.Names, error) {
	nc, js, n, err := ConnectJob(ctx, c, name)
	if err != nil {
		return nil, nil, bus.Names{}, err
	}
	if _, err := JobStream(ctx, js, n, n.Keys); err != nil {
		nc.Close()
		return nil, nil, bus.Names{}, err
	}
	return nc, js, n, nil
}

// JobNotFound says the job has no streams on this NATS: a misspelt --job or the wrong --nats. It
// is a usage error (exit 2).
func JobNotFound(n bus.Names) error {
	return config.Invalid(fmt.Errorf("job %q not found: no stream %s on this NATS (check --job and --nats; `ferry setup` creates a job)", n.Job, n.Keys))
}

// JobStream returns a stream of the job, or JobNotFound when the job's KEYS stream does not exist.
// For a work queue's name (n.Keys, n.Blobs, n.Uploaded) it is the queue's first stream, its
// first partition's when it has several (WorkQueue sums them).
func JobStream(ctx context.Context, js jetstream.JetStream, n bus.Names, name string) (jetstream.Stream, error) {
	base := name
	if n.Base(name) == "" && (name == n.Keys || name == n.Blobs || name == n.Uploaded) {
		name = n.Streams(name)[0]
	}
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) && base == n.Keys {
		return nil, JobNotFound(n)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return s, nil
}

// Queue is the state of a work queue summed over its streams (one per partition).
type Queue struct {
	Msgs    uint64    // waiting or in flight
	LastSeq uint64    // ever stored: the sum of the streams' last sequences
	Bytes   uint64    // on the broker's disk
	Created time.Time // the earliest stream's creation
}

// WorkQueue reads the streams of work queue base (n.Keys, n.Blobs or n.Uploaded) and sums them;
// JobNotFound when the job has no KEYS.
func WorkQueue(ctx context.Context, js jetstream.JetStream, n bus.Names, base string) (Queue, error) {
	var q Queue
	for i, name := range n.Streams(base) {
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) && base == n.Keys && i == 0 {
			return q, JobNotFound(n)
		}
		if err != nil {
			return q, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return q, fmt.Errorf("stream info %s: %w", name, err)
		}
		q.Msgs += info.State.Msgs
		q.LastSeq += info.State.LastSeq
		q.Bytes += info.State.Bytes
		if q.Created.IsZero() || info.Created.Before(q.Created) {
			q.Created = info.Created
		}
	}
	return q, nil
}
