package main

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
)

// Set at build time (`make build`, deploy/image/build.sh) with -ldflags "-X main.version=…
// -X main.commit=… -X main.date=…"; a plain `go build` in a git checkout gets commit and date
// from the Go build info instead.
var (
	version = "dev"
	commit  string
	date    string // the commit's date, not the build's: the same source builds the same binary
)

// versionLine is what `ferry version` prints.
func versionLine() string {
	rev, when, dirty := commit, date, false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.time":
				if when == "" {
					when = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		rev = "unknown"
	}
	if dirty {
		rev += " (modified)"
	}
	if when == "" {
		when = "unknown"
	}
	return fmt.Sprintf("ferry %s, commit %s of %s, %s %s/%s", version, rev, when, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print ferry's version, the commit it was built from and its date, and the Go version",
		UsageText: "ferry version",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintln(c.App.Writer, versionLine())
			return err
		},
	}
}

// completionCommand prints a shell completion script; the completions come from urfave/cli's
// hidden --generate-bash-completion flag (App.EnableBashCompletion).
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script of bash, zsh or fish",
		UsageText: "ferry completion bash|zsh|fish",
		Action: func(c *cli.Context) error {
			var script string
			switch shell := c.Args().First(); shell {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = "#compdef ferry\nautoload -U +X bashcompinit && bashcompinit\n" + bashCompletion
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				script = s
			case "":
				return config.Invalid(errors.New("completion: name the shell: bash, zsh or fish"))
			default:
				return config.Invalid(fmt.Errorf("completion: shell %q: want bash, zsh or fish", shell))
			}
			_, err := fmt.Fprint(c.App.Writer, strings.TrimLeft(script, "\n"))
			return err
		},
	}
}

const bashCompletion = `
_ferry_complete() {
  local cur words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == -* ]]; then
    words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o bashdefault -o default -F _ferry_complete ferry
`

// helpCommand replaces urfave/cli's, which shows only the first command's page: `ferry help dlq
// replay` is `ferry dlq replay --help`.
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		Aliases:   []string{"h"},
		Usage:     "show the commands, or one command's page",
		UsageText: "ferry help [command [subcommand]]",
		Action: func(c *cli.Context) error {
			a := app()
			a.Writer, a.ErrWriter = c.App.Writer, c.App.ErrWriter
			path := c.Args().Slice()
			for cmds, i := a.Commands, 0; i < len(path); i++ {
				j := slices.IndexFunc(cmds, func(cmd *cli.Command) bool { return cmd.HasName(path[i]) })
				if j < 0 {
					return config.Invalid(fmt.Errorf("help: no command %q (ferry help lists them)", strings.Join(path[:i+1], " ")))
				}
				cmds = cmds[j].Subcommands
			}
			return a.RunContext(c.Context, append(append([]string{"ferry"}, path...), "--help"))
		},
	}
}
