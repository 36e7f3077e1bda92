package service

import (
	"github.com/urfave/cli/v2"
)

// AdvisorEnv turns off the advisor of the stage services (--advisor).
const AdvisorEnv = "FERRY_ADVISOR"

// AdvisorFlag is --advisor of the fetcher, uploader and verifier: whether the process also runs
// the max-deliveries advisor and the orphan sweeper (StartAdvisor). Both delete messages from the
// work queues, so a deployment that gives each service only what it needs (deploy/nats/secure.conf)
// turns it off and runs `ferry advisor` under an identity of its own.
func AdvisorFlag() cli.Flag {
	return &cli.BoolFlag{Name: "advisor", Value: true, EnvVars: []string{AdvisorEnv},
		Usage: "also run the max-deliveries advisor and the orphan sweep, which delete and requeue work-queue messages; false where 'ferry advisor' runs them under its own NATS user (deploy/nats/secure.conf)"}
}

// StartAdvisorIf runs StartAdvisor unless --advisor=false.
func (e *Env) StartAdvisorIf(c *cli.Context) {
	if c.Bool("advisor") {
		e.StartAdvisor(c.Context)
		return
	}
	e.Log.Info("advisor off (--advisor=false): `ferry advisor` dead-letters messages that ran out of deliveries and requeues orphans")
}
