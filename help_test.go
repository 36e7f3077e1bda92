package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestFlagPlaceholders: urfave/cli takes the first `back-quoted` text of a flag's usage as its
// value placeholder in --help, so back quotes may only hold a placeholder (DIR, FILE, s3://…),
// never a command, which would print as "--upload-rate ferry throttle --stage uploader".
func TestFlagPlaceholders(t *testing.T) {
	placeholder := regexp.MustCompile("`([A-Z]+|s3://[a-z/]+)`")
	var walk func(path string, cmds []*cli.Command)
	check := func(path string, flags []cli.Flag) {
		for _, f := range flags {
			d, ok := f.(cli.DocGenerationFlag)
			if !ok {
				continue
			}
			u := d.GetUsage()
			if strings.Count(u, "`") == 0 {
				continue
			}
			if strings.Count(u, "`") != 2 || !placeholder.MatchString(u) {
				t.Errorf("%s --%s: usage %q: back quotes must hold one placeholder (DIR, FILE, s3://bucket/prefix)", path, f.Names()[0], u)
			}
		}
	}
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := path + " " + c.Name
			check(p, c.Flags)
			walk(p, c.Subcommands)
		}
	}
	a := app()
	check("ferry", a.Flags)
	walk("ferry", a.Commands)
}
