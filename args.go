package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// hoistGlobals moves the global flags given after a subcommand (`ferry run --nats URL`) in front
// of it, where urfave/cli parses them: a global flag means the same on any command, and an
// operator adds one where the line ends. Flags before the subcommand stay; everything after "--"
// is left alone. No command has a flag of a global flag's name (TestGlobalFlagsAnywhere), so
// nothing of a command is taken.
func hoistGlobals(args []string, globals []cli.Flag) []string {
	if len(args) < 2 {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range globals {
		_, isBool := f.(*cli.BoolFlag)
		for _, name := range f.Names() {
			takesValue[name] = !isBool
		}
	}
	// global returns the flag name of a token that is a global flag, and whether its value is
	// the next token.
	global := func(tok string) (string, bool, bool) {
		if !strings.HasPrefix(tok, "-") || tok == "-" || tok == "--" {
			return "", false, false
		}
		name, _, inline := strings.Cut(strings.TrimLeft(tok, "-"), "=")
		v, ok := takesValue[name]
		return name, ok, ok && v && !inline
	}
	out := []string{args[0]}
	i := 1
	for ; i < len(args); i++ { // up to the subcommand
		if _, ok, next := global(args[i]); ok {
			out = append(out, args[i])
			if next && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			continue
		}
		if strings.HasPrefix(args[i], "-") {
			out = append(out, args[i]) // --help, --version, or a mistake cli reports
			continue
		}
		break
	}
	var hoisted, rest []string
	for ; i < len(args); i++ {
		if args[i] == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if _, ok, next := global(args[i]); ok {
			hoisted = append(hoisted, args[i])
			if next && i+1 < len(args) {
				i++
				hoisted = append(hoisted, args[i])
			}
			continue
		}
		rest = append(rest, args[i])
	}
	return append(append(out, hoisted...), rest...)
}

// globalsHelp is the section every command's help page ends with: the global flags, which
// hoistGlobals accepts anywhere on the line.
func globalsHelp(globals []cli.Flag) string {
	var b strings.Builder
	b.WriteString("\nGLOBAL OPTIONS (before or after the command):\n")
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	for _, f := range globals {
		fmt.Fprintf(tw, "   %s\n", f.String())
	}
	tw.Flush()
	return b.String()
}

// withGlobalsHelp adds globalsHelp to urfave/cli's command help templates, once.
func withGlobalsHelp(globals []cli.Flag) {
	section := globalsHelp(globals)
	for _, t := range []*string{&cli.CommandHelpTemplate, &cli.SubcommandHelpTemplate} {
		if !strings.HasSuffix(*t, section) {
			*t += section
		}
	}
}

// defaultFlagStringer is urfave/cli's: wrappedFlag wraps what it writes.
var defaultFlagStringer = cli.FlagStringer

func init() { cli.FlagStringer = wrappedFlag }

// usageWidth is where a flag's usage text wraps in --help; the help's tab alignment indents the
// next lines under the first.
const usageWidth = 72

// wrappedFlag is a flag's line in --help with its usage wrapped at usageWidth.
func wrappedFlag(f cli.Flag) string {
	s := defaultFlagStringer(f)
	name, usage, ok := strings.Cut(s, "\t")
	if !ok || len(usage) <= usageWidth {
		return s
	}
	var lines []string
	line := ""
	for _, w := range strings.Fields(usage) {
		if line != "" && len(line)+1+len(w) > usageWidth {
			lines, line = append(lines, line), w
			continue
		}
		line = strings.TrimSpace(line + " " + w)
	}
	return name + "\t" + strings.Join(append(lines, line), "\n\t")
}
