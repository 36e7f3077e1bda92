package main

import (
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestExamples: every command's --help has examples, and the flags they use are the command's
// (checked as the docs' commands are, TestDocsCommands).
func TestExamples(t *testing.T) {
	h := newHelpIndex(t)
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" && path != "" { // a group's own help is urfave/cli's
				continue
			}
			p := strings.TrimSpace(path + " " + c.Name)
			if len(examples[p]) == 0 {
				t.Errorf("ferry %s: no examples in its --help", p)
			}
			for _, ex := range examples[p] {
				invs := invocations(ex)
				if len(invs) == 0 && !strings.Contains(ex, "ferry completion") {
					t.Errorf("ferry %s: example %q runs no ferry command", p, ex)
				}
				for _, inv := range invs {
					for _, problem := range h.check(inv) {
						t.Errorf("ferry %s: example %q: %s", p, ex, problem)
					}
				}
			}
			walk(p, c.Subcommands)
		}
	}
	walk("", app().Commands)
	for p := range examples {
		if _, ok := h.flags[p]; !ok && p != "help" { // help takes command names, no flags of its own
			t.Errorf("examples of %q: no such command", p)
		}
	}
}
