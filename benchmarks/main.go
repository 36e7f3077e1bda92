// Command ferry-bench is ferry's side-by-side benchmark (`make bench`, `make bench-scale`). On the
// local stack it migrates one seeded key set four ways, one after another, each from a cold start:
//
//   - direct: N goroutines read from Cassandra and PUT to S3, no broker: the bound;
//   - seed-design: the system ferry replaces, keys in a Redis list, N workers BRPOP, read, PUT;
//   - ferry-split: `ferry producer|fetcher|uploader|verifier` as four processes on the local NATS;
//   - ferry-run: `ferry run` on its embedded JetStream server;
//
// and reports files/s, CPU seconds per 1,000 files, peak RSS and Cassandra reads per file, with
// ratios, as markdown and JSON under benchmarks/results/. `make bench-soak` runs ferry-split and
// ferry-run at growing counts of 1 KiB blobs with a DONE drain, for cost per file, RSS and the
// NATS store as the work grows. `make bench-diff` times `ferry diff` against sort + comm;
// `make bench-scan` times `ferry producer --scan` against one SELECT of the keys. The direct,
// seed-design and scan workers are subcommands of this binary, run as child processes so their
// resource usage is measured alone.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second signal kills
	app := &cli.App{
		Name:  "ferry-bench",
		Usage: "benchmark ferry against a direct copy and the Redis-list design on the local stack",
		Commands: []*cli.Command{
			benchCommand(),
			scaleCommand(),
			soakCommand(),
			diffCommand(),
			scanCommand(),
			directCommand(),
			seedDesignCommand(),
			scanSelectCommand(),
			scanRangesCommand(),
		},
	}
	if err := app.RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "ferry-bench:", err)
		os.Exit(1)
	}
}
