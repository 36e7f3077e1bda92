package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/service"
)

// TestGlobalFlagsAnywhere: global flags after a subcommand are moved in front of it, values and
// all; command flags, positional arguments and everything after "--" stay where they are.
func TestGlobalFlagsAnywhere(t *testing.T) {
	g := service.GlobalFlags()
	for _, tc := range []struct{ in, want string }{
		{"ferry run --nats nats://h:4222 --keys k.txt", "ferry --nats nats://h:4222 run --keys k.txt"},
		{"ferry --job a run --job=b", "ferry --job a --job=b run"},
		{"ferry dlq replay --reason not_found --job photos", "ferry --job photos dlq replay --reason not_found"},
		{"ferry status --nats-allow-plaintext --json", "ferry --nats-allow-plaintext status --json"},
		{"ferry -job x status", "ferry -job x status"},
		{"ferry diff a.txt b.txt --log-level debug -o out", "ferry --log-level debug diff a.txt b.txt -o out"},
		{"ferry producer --keys f -- --job y", "ferry producer --keys f -- --job y"},
		{"ferry run --config", "ferry --config run"},
		{"ferry", "ferry"},
		{"ferry --help", "ferry --help"},
	} {
		got := strings.Join(hoistGlobals(strings.Fields(tc.in), g), " ")
		if got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}

	// No command has a flag of a global flag's name: hoisting would take it from the command.
	var globals []string
	for _, f := range g {
		globals = append(globals, f.Names()...)
	}
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := path + " " + c.Name
			for _, f := range c.Flags {
				for _, name := range f.Names() {
					if slices.Contains(globals, name) {
						t.Errorf("%s --%s: a command flag named like a global flag", p, name)
					}
				}
			}
			walk(p, c.Subcommands)
		}
	}
	a := app()
	walk("ferry", a.Commands)

	// Every command's help page lists the global flags.
	for _, args := range [][]string{{"ferry", "run", "--help"}, {"ferry", "dlq", "--help"}, {"ferry", "dlq", "replay", "--help"}, {"ferry", "status", "--help"}} {
		var out bytes.Buffer
		a := app()
		a.Writer = &out
		if err := a.Run(args); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), "GLOBAL OPTIONS") || !strings.Contains(out.String(), "--nats value") ||
			strings.Count(out.String(), "GLOBAL OPTIONS") != 1 {
			t.Errorf("%v: no single GLOBAL OPTIONS section with --nats:\n%s", args, out.String())
		}
	}
}
