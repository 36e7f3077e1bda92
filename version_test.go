package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/ferry-migrate/ferry/shared/config"
)

// TestBasics: `ferry version`, `ferry completion` and `ferry help <command> <subcommand>`. (The
// words the bash script asks for, `ferry … --generate-bash-completion`, are urfave/cli's; it reads
// them from os.Args, which a test cannot set.)
func TestBasics(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    string // a regexp the output matches
		invalid bool   // a usage error (exit 2)
	}{
		{args: []string{"version"}, want: `^ferry \S+, commit \S+.* of \S+, go1\.\d+`},
		{args: []string{"completion", "bash"}, want: `complete -o bashdefault -o default -F _ferry_complete ferry`},
		{args: []string{"completion", "zsh"}, want: `(?s)^#compdef ferry.*bashcompinit.*_ferry_complete`},
		{args: []string{"completion", "fish"}, want: `complete -r -c ferry -n '__fish_ferry_no_subcommand' -a 'run'`},
		{args: []string{"completion", "csh"}, invalid: true},
		{args: []string{"completion"}, invalid: true},
		{args: []string{"help", "dlq", "replay"}, want: `^NAME:\n   ferry dlq replay - `},
		{args: []string{"help", "run"}, want: `^NAME:\n   ferry run - (?s).*GLOBAL OPTIONS`},
		{args: []string{"help"}, want: `(?s)^NAME:\n   ferry - .*version.*completion`},
		{args: []string{"--help"}, want: `^NAME:\n   ferry - `},
		{args: []string{"help", "nosuch"}, invalid: true},
		{args: []string{"help", "dlq", "nope"}, invalid: true},
	} {
		a := app()
		var out bytes.Buffer
		a.Writer, a.ErrWriter = &out, &out
		err := a.RunContext(context.Background(), append([]string{"ferry"}, tc.args...))
		name := strings.Join(tc.args, " ")
		if tc.invalid {
			if !config.IsInvalid(err) {
				t.Errorf("ferry %s: %v, want a usage error", name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ferry %s: %v", name, err)
			continue
		}
		if !regexp.MustCompile(tc.want).MatchString(out.String()) {
			t.Errorf("ferry %s: output does not match %q:\n%s", name, tc.want, out.String())
		}
	}
}
