package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// examples are each command's examples, added to its --help (TestExamples checks every visible
// command has some and that their flags are the command's).
var examples = map[string][]string{
	"setup":        {"ferry --job photos setup --replicas 3 --partitions 3", "ferry --job photos setup --ack-wait 5m   # change a setting of a job that runs", "ferry --job photos setup --delete --yes"},
	"producer":     {"ferry --job photos --config ferry.yaml producer --keys keys-*.txt.zst", "ferry --job photos --config ferry.yaml producer --scan --scan-rate 2000", "ferry --job photos --config ferry.yaml producer --scan --since 2026-12-01T00:00:00Z   # a delta pass"},
	"fetcher":      {"ferry --job photos --config ferry.yaml fetcher --concurrency 64 --read-rate 500", "ferry --job photos --config ferry.yaml --metrics-addr :9100 fetcher --adaptive"},
	"uploader":     {"ferry --job photos --config ferry.yaml uploader --concurrency 64", "ferry --job photos --config ferry.yaml uploader --upload-rate 1000 --skip-existing"},
	"verifier":     {"ferry --job photos --config ferry.yaml verifier --deep-sample 0.01"},
	"advisor":      {"ferry --job photos --nats-creds advisor.creds advisor"},
	"run":          {"ferry --job photos --config ferry.yaml run --keys keys.txt", "ferry --job photos --config ferry.yaml run --keys 'keys-*.txt' --read-rate 300 --listen 127.0.0.1:4222", "ferry --job photos --data ferry-data status   # while it runs, or after"},
	"dlq":          {"ferry --job photos dlq ls", "ferry --job photos dlq replay --reason source_error"},
	"dlq ls":       {"ferry --job photos dlq ls"},
	"dlq export":   {"ferry --job photos dlq export --reason not_found --out missing.tsv", "ferry --job photos dlq export --stage uploader --raw"},
	"dlq replay":   {"ferry --job photos dlq replay --reason source_error --dry-run", "ferry --job photos dlq replay --stage uploader --limit 1000"},
	"throttle":     {"ferry --job photos throttle --read-rate 2000 --byte-rate 200e6", "ferry --job photos throttle --stage uploader --concurrency 32", "ferry --job photos throttle --clear"},
	"seed":         {"ferry --config ferry.yaml seed --count 1000 --absent 10 --keys-out keys.txt"},
	"bench":        {"ferry --config ferry.yaml bench source --keys keys.txt --duration 30s", "ferry --config ferry.yaml bench dest --sizes 30KiB,1MiB"},
	"bench source": {"ferry --config ferry.yaml bench source --keys keys.txt --concurrency 64 --duration 1m --json"},
	"bench dest":   {"ferry --config ferry.yaml bench dest --sizes 30KiB,1MiB --duration 30s"},
	"plan":         {"ferry plan --keys 150e9 --mean-size 30KiB --days 40", "ferry plan --keys 2e9 --mean-size 120KiB --days 10 --replicas 3 --json"},
	"diff":         {"ferry diff keys-cassandra.txt.zst keys-exported.txt.gz", "ferry diff --only-a - old.txt new.txt | ferry --job photos producer --keys -", "ferry --config ferry.yaml diff --source keys.txt --bucket s3://photos --json"},
	"prune":        {"ferry --job photos --config ferry.yaml prune --out prune-report", "ferry --job photos --config ferry.yaml prune --delete --max-delete 1000"},
	"console":      {"ferry --job photos console --listen 127.0.0.1:8080   # then open http://127.0.0.1:8080/", "ferry --job photos --data ferry-data console   # a ferry run's job"},
	"status":       {"ferry --job photos status", "ferry --job photos status --watch", "ferry --job photos status --json | jq .backlog"},
	"report":       {"ferry --job photos --config ferry.yaml report --out report/"},
	"manifest":     {"ferry --job photos --config ferry.yaml manifest", "ferry --job photos --config ferry.yaml manifest --once   # from cron"},
	"repair":       {"ferry --job photos repair --dry-run", "ferry --job photos repair --stage uploader"},
	"version":      {"ferry version"},
	"completion":   {"source <(ferry completion bash)", "ferry completion fish > ~/.config/fish/completions/ferry.fish"},
	"help":         {"ferry help dlq replay"},
}

// withExamples appends each command's examples to its --help description.
func withExamples(path string, cmds []*cli.Command) {
	for _, c := range cmds {
		p := strings.TrimSpace(path + " " + c.Name)
		if ex := examples[p]; len(ex) > 0 && !strings.Contains(c.Description, "Examples:") {
			if c.Description != "" {
				c.Description += "\n\n"
			}
			c.Description += "Examples:\n   " + strings.Join(ex, "\n   ")
		}
		withExamples(p, c.Subcommands)
	}
}
