// Package advisor is `ferry advisor`: the max-deliveries advisor and the orphan sweeper of a job,
// alone in a process of its own. They are the only part of the pipeline that deletes messages
// from the work queues (a message that ran out of deliveries, once dead-lettered; an orphan, once
// requeued), so a deployment that runs each service under a NATS user with only what it needs
// (deploy/nats/secure.conf) runs them here, under the advisor's user, and starts the fetcher,
// uploader and verifier with --advisor=false. The process holds no S3 or Cassandra credentials.
package advisor

import (
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Command is `ferry advisor`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "advisor",
		Usage: "dead-letter messages that ran out of deliveries and requeue orphans, under a NATS user of its own (with --advisor=false on the other services)",
		Action: func(c *cli.Context) error {
			env, err := service.Open(c.Context, c, service.Options{Name: bus.StageAdvisor, Settings: bus.DefaultSettings()})
			if err != nil {
				return err
			}
			defer env.Close()
			env.StartAdvisor(c.Context)
			env.Log.Info("advisor running", "advisories", env.Names.Advisories)
			<-c.Context.Done()
			return nil
		},
	}
}
