package service

import (
	"context"
	"errors"
	"fmt"

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
	return nc, js, bus.For(job), nil
}

// JobNotFound says the job has no streams on this NATS: a misspelt --job or the wrong --nats. It
// is a usage error (exit 2).
func JobNotFound(n bus.Names) error {
	return config.Invalid(fmt.Errorf("job %q not found: no stream %s on this NATS (check --job and --nats; `ferry setup` creates a job)", n.Job, n.Keys))
}

// JobStream returns a stream of the job, or JobNotFound when the job's KEYS stream does not exist.
func JobStream(ctx context.Context, js jetstream.JetStream, n bus.Names, name string) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) && name == n.Keys {
		return nil, JobNotFound(n)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return s, nil
}
