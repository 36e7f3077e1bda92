package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/urfave/cli/v2"
)

// The docs checked: the README and every page under docs/.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"README.md"}, files...)
}

// TestDocsCommands: every `ferry [global flags] <command> [<subcommand>] [flags]` quoted in the
// docs, in a code block or in inline code, names a command that exists, and each flag it quotes
// is listed in the --help of the place it stands: before the command, `ferry --help` (the global
// flags); after it, that command's --help. urfave/cli parses flags only up to the first argument,
// so a flag after an argument is reported too. Other tools' commands (nats, make, helm, kubectl,
// podman) are not read, except where they run ferry (`kubectl exec … -- /ferry status`, an image
// `…/ferry:dev fetcher …`).
func TestDocsCommands(t *testing.T) {
	h := newHelpIndex(t)
	seen := 0
	for _, file := range docFiles(t) {
		for _, s := range snippets(t, file) {
			for _, inv := range invocations(s.text) {
				seen++
				for _, problem := range h.check(inv) {
					t.Errorf("%s:%d: `%s`: %s", file, s.line, strings.Join(inv.tokens, " "), problem)
				}
			}
		}
	}
	if seen < 50 {
		t.Errorf("found only %d ferry command lines in the docs: the extraction is broken", seen)
	}
}

// foreignFlags are flags the docs quote on their own (not after `ferry …`) that belong to other
// tools: they are not ferry's, and TestDocsFlags lets them pass.
var foreignFlags = map[string]string{
	"--cert":             "versitygw",
	"--key":              "versitygw",
	"--install":          "helm upgrade",
	"--version":          "helm, and ferry's own --version",
	"--network":          "podman run",
	"--strict-checksums": "mvn",
	"--rm":               "podman run",
	"--ultra":            "zstd",
	"--long":             "zstd",
}

// TestDocsFlags: a flag the docs quote on its own in inline code (`--read-rate`, `--scan-dc dc2`)
// is a flag of some ferry command, or of a tool listed in foreignFlags.
func TestDocsFlags(t *testing.T) {
	h := newHelpIndex(t)
	all := map[string]bool{}
	for _, flags := range h.flags {
		for f := range flags {
			all[f] = true
		}
	}
	lone := regexp.MustCompile(`^(--[a-z0-9][a-z0-9-]*)(?:[= ]|$)`)
	for _, file := range docFiles(t) {
		for _, s := range snippets(t, file) {
			if !s.inline {
				continue
			}
			m := lone.FindStringSubmatch(s.text)
			if m == nil || all[m[1]] || foreignFlags[m[1]] != "" {
				continue
			}
			t.Errorf("%s:%d: `%s`: %s is no flag of any ferry command (nor listed in foreignFlags)", file, s.line, s.text, m[1])
		}
	}
}

// TestDocsLinks: every relative link in the docs points at a file of the repository and, with a
// #fragment, at a heading of that file.
func TestDocsLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, file := range docFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path, frag, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), path)
					if _, err := os.Stat(dest); err != nil {
						t.Errorf("%s:%d: link %s: %v", file, i+1, target, err)
						continue
					}
				}
				if frag != "" && !anchors(t, dest)[frag] {
					t.Errorf("%s:%d: link %s: no heading #%s in %s", file, i+1, target, frag, dest)
				}
			}
		}
	}
}

// anchors are the GitHub anchors of file's headings.
func anchors(t *testing.T, file string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	if !strings.HasSuffix(file, ".md") {
		return out
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fenced := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var slug strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				slug.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				slug.WriteRune(r)
			}
		}
		s := slug.String()
		for n := 1; out[s]; n++ { // GitHub numbers repeated headings
			s = fmt.Sprintf("%s-%d", slug.String(), n)
		}
		out[s] = true
	}
	return out
}

// snippet is code quoted in a doc: one line of a fenced block (continuation lines joined) or one
// inline code span.
type snippet struct {
	text   string
	line   int
	inline bool
}

var inlineCode = regexp.MustCompile("`([^`]+)`")

func snippets(t *testing.T, file string) []snippet {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []snippet
	fenced := false
	var cont strings.Builder
	contLine := 0
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			if cont.Len() == 0 {
				contLine = i + 1
			}
			if strings.HasSuffix(line, "\\") {
				cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
				continue
			}
			cont.WriteString(line)
			out = append(out, snippet{text: cont.String(), line: contLine})
			cont.Reset()
			continue
		}
		for _, m := range inlineCode.FindAllStringSubmatch(line, -1) {
			out = append(out, snippet{text: m[1], line: i + 1, inline: true})
		}
	}
	return out
}

// invocation is one ferry command line: the tokens from the binary to the end of the command.
type invocation struct {
	tokens []string
	// first says the binary stands where a shell reads a command (not as another tool's argument):
	// an unknown word after it is then a command that does not exist.
	first bool
}

// binary matches how the docs run ferry: ferry, /ferry, .local/bin/ferry, or an image whose
// entrypoint it is (localhost/ferry:dev).
var binary = regexp.MustCompile(`^(?:ferry|(?:[\w.$-]*/)+ferry(?::[\w.-]+)?)$`)

// invocations finds the ferry command lines in one snippet of shell.
func invocations(s string) []invocation {
	toks := shellTokens(s)
	var out []invocation
	first := true // at the start of a command
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		switch {
		case tok == "#": // a comment: its words are prose, but a ferry command in it is still read
			first = false
			continue
		case isOperator(tok):
			first = true
			continue
		case binary.MatchString(tok) && (i == 0 || !strings.HasPrefix(toks[i-1], "-") || toks[i-1] == "--"):
			inv := invocation{first: first || (i > 0 && toks[i-1] == "--")}
			j := i
			for ; j < len(toks) && !isOperator(toks[j]); j++ {
				inv.tokens = append(inv.tokens, toks[j])
			}
			out = append(out, inv)
			i = j - 1
			first = false
			continue
		}
		// An environment assignment or a command runner keeps the next word in command position.
		if !(first && (strings.Contains(tok, "=") && !strings.HasPrefix(tok, "-") || tok == "exec" || tok == "time" || tok == "env" || tok == "sudo")) {
			first = false
		}
	}
	return out
}

func isOperator(tok string) bool {
	switch tok {
	case "|", "||", "&&", ";", "&", "(", ")", "{", "}", "#", ">", ">>", "<", "2>", "2>&1", "$(":
		return true
	}
	return false
}

// shellTokens splits s as a shell would, roughly: quotes group, operators stand alone, a word
// starting with # starts a comment (itself read as more words, so that a comment's ferry
// commands are checked too).
func shellTokens(s string) []string {
	var toks []string
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			toks = append(toks, cur.String())
		}
		cur.Reset()
		inWord = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				end = len(s) - i - 1
			}
			cur.WriteString(s[i+1 : i+1+end])
			inWord = true
			i += end + 1
		case c == ' ' || c == '\t':
			flush()
		case c == '#' && !inWord:
			flush()
			toks = append(toks, "#")
		case c == '$' && i+1 < len(s) && s[i+1] == '(':
			flush()
			toks = append(toks, "$(")
			i++
		case strings.IndexByte("|;&(){}<>", c) >= 0:
			flush()
			op := string(c)
			for i+1 < len(s) && strings.IndexByte("|&>", s[i+1]) >= 0 && len(op) < 2 {
				op += string(s[i+1])
				i++
			}
			toks = append(toks, op)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return toks
}

// helpIndex holds what --help lists for every command path ("" is the app: the global flags).
type helpIndex struct {
	flags map[string]map[string]bool // path → flag (--name, -n) → takes a value
	subs  map[string][]string        // path → its subcommands
}

func newHelpIndex(t *testing.T) *helpIndex {
	t.Helper()
	h := &helpIndex{flags: map[string]map[string]bool{}, subs: map[string][]string{}}
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		p := strings.Join(path, " ")
		h.flags[p] = helpFlags(t, path)
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			if c.Name == "help" { // its arguments are command names, not subcommands of its own
				h.subs[p] = append(h.subs[p], c.Name)
				continue
			}
			h.subs[p] = append(h.subs[p], c.Name)
			walk(append(append([]string(nil), path...), c.Name), c.Subcommands)
		}
	}
	walk(nil, app().Commands)
	return h
}

// helpFlags runs `ferry <path> --help` as the binary does and reads the flags in its OPTIONS.
func helpFlags(t *testing.T, path []string) map[string]bool {
	t.Helper()
	a := app()
	var b bytes.Buffer
	a.Writer, a.ErrWriter = &b, &b
	args := append(append([]string{"ferry"}, path...), "--help")
	if err := a.RunContext(context.Background(), args); err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	flags := map[string]bool{"--help": false, "-h": false}
	options := false
	name := regexp.MustCompile(`^--?[A-Za-z0-9][A-Za-z0-9-]*$`)
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasSuffix(line, "OPTIONS:") {
			options = true
			continue
		}
		trimmed := strings.TrimSpace(line)
		// A flag's line starts at the section's indent; its usage wraps onto deeper ones.
		if !options || !strings.HasPrefix(line, "   -") {
			continue
		}
		// "--keys value, -k value [ --keys value, -k value ]  key list(s)…": the names, then two
		// spaces and the usage.
		spec, _, _ := strings.Cut(trimmed, "  ")
		spec, _, _ = strings.Cut(spec, " [")
		for _, part := range strings.Split(spec, ",") {
			fields := strings.Fields(part)
			if len(fields) == 0 || !name.MatchString(fields[0]) {
				continue
			}
			flags[fields[0]] = len(fields) > 1
		}
	}
	if len(path) == 0 && len(flags) < 8 {
		t.Fatalf("%s: the global flags were not read from its help:\n%s", strings.Join(args, " "), b.String())
	}
	return flags
}

var commandWord = regexp.MustCompile(`^[a-z][a-z-]*$`)

// check returns what is wrong with one invocation, if anything.
func (h *helpIndex) check(inv invocation) []string {
	toks := inv.tokens[1:]
	var problems []string
	path := ""
	i := 0
	// flags reads the flags at toks[i:] for path until a word that is not a flag.
	flags := func() {
		for i < len(toks) && strings.HasPrefix(toks[i], "-") && toks[i] != "-" && toks[i] != "--" {
			f, _, hasValue := strings.Cut(toks[i], "=")
			takesValue, ok := h.flags[path][f]
			if !ok {
				where := "ferry --help (the global flags, which go before the command)"
				if path != "" {
					where = "ferry " + path + " --help"
				}
				if _, global := h.flags[""][f]; global && path != "" {
					problems = append(problems, fmt.Sprintf("%s is a global flag: it goes before the command (ferry %s %s)", f, f, path))
				} else {
					problems = append(problems, fmt.Sprintf("%s is not in %s", f, where))
				}
			}
			i++
			if takesValue && !hasValue {
				i++
			}
		}
	}
	flags()
	if i >= len(toks) {
		return problems
	}
	// The command, then a subcommand while the command has them.
	for i < len(toks) {
		word := toks[i]
		subs := h.subs[path]
		if len(subs) == 0 {
			break
		}
		known := false
		for _, s := range subs {
			known = known || s == word
		}
		if !known {
			if path == "" && !inv.first {
				return nil // "ferry" as another tool's word (a namespace, an image in prose)
			}
			if commandWord.MatchString(word) {
				where := "ferry --help"
				if path != "" {
					where = "ferry " + path + " --help"
				}
				problems = append(problems, fmt.Sprintf("no command %q in %s (commands: %s)", word, where, strings.Join(sortedCopy(subs), ", ")))
			}
			return problems
		}
		if path == "" {
			path = word
		} else {
			path += " " + word
		}
		i++
		flags()
	}
	// Arguments: a flag after one is not parsed as a flag.
	for ; i < len(toks); i++ {
		if strings.HasPrefix(toks[i], "--") && len(toks[i]) > 2 {
			problems = append(problems, fmt.Sprintf("%s comes after an argument (%s): flags go before the arguments", toks[i], toks[i-1]))
			break
		}
	}
	return problems
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}
