package report

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Command is `ferry report`.
func Command() *cli.Command {
	var out string
	return &cli.Command{
		Name:  "report",
		Usage: "write report.md and report.json (outcome, dead letters by reason, verified per minute) and the dead-lettered keys (reads NATS, and the manifest drain's resolutions, or an older drain's segments, when a failure may have been resolved by a drained DONE entry: then it needs the job file)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Value: ".", Destination: &out, Usage: "folder to write report.md, report.json, dlq-keys.txt, dlq.jsonl and pruned.txt into"},
		},
		Action: func(c *cli.Context) error {
			nc, js, n, err := service.ConnectJob(c.Context, c, "report")
			if err != nil {
				return err
			}
			defer nc.Close()
			var o Options
			if job, err := config.Load(c.String("config")); err != nil {
				o.ManifestsErr = err
			} else if o.Manifests, err = manifest.StoreFor(c.Context, job); err != nil {
				o.ManifestsErr = err
			} else {
				o.Prefix = job.Manifest.Prefix
			}
			r, err := WriteWith(c.Context, js, n, out, time.Now(), o)
			if err != nil {
				return err
			}
			fmt.Printf("job %s: %d published, %d verified, %d dead-lettered, %d still in the pipeline\n",
				r.Job, r.Published, r.Verified, r.DeadLettered, r.InPipeline)
			if d := r.Discrepancy(); d != "" {
				fmt.Printf("the counts do not add up: %s\n", d)
			}
			switch r.ProofStatus {
			case ProofProven:
				fmt.Println("cut-over proof: PROVEN")
			case ProofFailed:
				fmt.Printf("cut-over proof: NOT PROVEN (%s)\n", r.ProofWhy)
			}
			fmt.Printf("wrote %s, %s, %s, %s, %s, %s\n", filepath.Join(out, FileMarkdown), filepath.Join(out, FileHTML), filepath.Join(out, FileJSON),
				filepath.Join(out, FileKeys), filepath.Join(out, FileEntries), filepath.Join(out, FilePruned))
			return nil
		},
	}
}
