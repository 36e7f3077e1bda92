// Package grafana holds ferry's Grafana dashboard (ferry.json); its test lints it with the rules of
// Grafana's dashboard linter (github.com/grafana/dashboard-linter), implemented here because that
// module is not available to this build: a datasource variable and multi-select job and instance
// variables, every PromQL selector filtered by job and instance, rates over $__rate_interval,
// well-formed PromQL with known functions only, the ${datasource} data source on every panel and
// target, a title, description and unit on every panel, and unique panel ids. The e2e test
// TestMetricsEndpoints checks the metric names it queries against what the services serve.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."}
	Datasource *datasource     `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
}

// query is the variable's query, whichever of its two forms the file uses.
func (v variable) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &o) == nil {
		return o.Query
	}
	return ""
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Datasource  *datasource `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's
}

type target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *datasource `json:"datasource"`
}

func (p panel) name() string { return fmt.Sprintf("panel %q (id %d)", p.Title, p.ID) }

func (p panel) isRow() bool { return p.Type == "row" }

// allPanels is every panel, those of collapsed rows included.
func (d *dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// targets calls f with every target of every non-row panel.
func (d *dashboard) targets(f func(p panel, t target)) {
	for _, p := range d.allPanels() {
		if p.isRow() {
			continue
		}
		for _, t := range p.Targets {
			f(p, t)
		}
	}
}

func (d *dashboard) variable(name string) (variable, bool) {
	for _, v := range d.Templating.List {
		if v.Name == name {
			return v, true
		}
	}
	return variable{}, false
}

const dsVar = "${datasource}"

// rule is one rule of the linter: it returns a message for each violation.
type rule struct {
	name  string
	check func(d *dashboard) []string
}

var rules = []rule{
	{"template-datasource-rule", func(d *dashboard) []string {
		v, ok := d.variable("datasource")
		switch {
		case !ok:
			return []string{"no template variable named datasource"}
		case v.Type != "datasource" || v.query() != "prometheus":
			return []string{fmt.Sprintf("variable datasource: type %q, query %q; want type datasource, query prometheus", v.Type, v.query())}
		}
		return nil
	}},
	{"template-job-rule", func(d *dashboard) []string { return labelVariable(d, "job") }},
	{"template-instance-rule", func(d *dashboard) []string { return labelVariable(d, "instance") }},
	{"target-job-rule", func(d *dashboard) []string { return selectorMatcher(d, "job") }},
	{"target-instance-rule", func(d *dashboard) []string { return selectorMatcher(d, "instance") }},
	{"target-rate-interval-rule", func(d *dashboard) []string {
		var out []string
		d.targets(func(p panel, t target) {
			for _, e := range rateIntervals(lex(t.Expr)) {
				out = append(out, fmt.Sprintf("%s target %s: %s", p.name(), t.RefID, e))
			}
		})
		return out
	}},
	{"target-promql-rule", func(d *dashboard) []string {
		var out []string
		d.targets(func(p panel, t target) {
			for _, e := range promqlProblems(t.Expr) {
				out = append(out, fmt.Sprintf("%s target %s: %s", p.name(), t.RefID, e))
			}
		})
		return out
	}},
	{"panel-datasource-rule", func(d *dashboard) []string {
		var out []string
		for _, p := range d.allPanels() {
			if p.isRow() {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != dsVar {
				out = append(out, fmt.Sprintf("%s: data source %v, want uid %s", p.name(), p.Datasource, dsVar))
			}
			for _, t := range p.Targets {
				if t.Datasource == nil || t.Datasource.UID != dsVar {
					out = append(out, fmt.Sprintf("%s target %s: data source %v, want uid %s", p.name(), t.RefID, t.Datasource, dsVar))
				}
			}
		}
		return out
	}},
	{"panel-title-description-rule", func(d *dashboard) []string {
		var out []string
		for _, p := range d.allPanels() {
			if p.isRow() {
				continue
			}
			if strings.TrimSpace(p.Title) == "" {
				out = append(out, fmt.Sprintf("%s: no title", p.name()))
			}
			if strings.TrimSpace(p.Description) == "" {
				out = append(out, fmt.Sprintf("%s: no description", p.name()))
			}
		}
		return out
	}},
	{"panel-units-rule", func(d *dashboard) []string {
		var out []string
		for _, p := range d.allPanels() {
			if (p.Type == "timeseries" || p.Type == "stat") && p.FieldConfig.Defaults.Unit == "" {
				out = append(out, fmt.Sprintf("%s: no fieldConfig.defaults.unit", p.name()))
			}
		}
		return out
	}},
	{"uniqueness", func(d *dashboard) []string {
		var out []string
		if d.UID == "" || d.Title == "" {
			out = append(out, fmt.Sprintf("dashboard uid %q, title %q: both must be set", d.UID, d.Title))
		}
		if d.SchemaVersion < 36 {
			out = append(out, fmt.Sprintf("schemaVersion %d < 36", d.SchemaVersion))
		}
		seen := map[int]string{}
		for _, p := range d.allPanels() {
			if prev, ok := seen[p.ID]; ok {
				out = append(out, fmt.Sprintf("%s: id already used by panel %q", p.name(), prev))
			}
			seen[p.ID] = p.Title
		}
		return out
	}},
}

// labelVariable checks the query variable name: label_values(..., name), multi-select, All, on
// the dashboard's data source.
func labelVariable(d *dashboard, name string) []string {
	v, ok := d.variable(name)
	if !ok {
		return []string{"no template variable named " + name}
	}
	var out []string
	bad := func(format string, a ...any) { out = append(out, fmt.Sprintf("variable "+name+": "+format, a...)) }
	if v.Type != "query" {
		bad("type %q, want query", v.Type)
	}
	q := regexp.MustCompile(`^label_values\(.+,\s*` + name + `\s*\)$`)
	if !q.MatchString(strings.TrimSpace(v.query())) {
		bad("query %q, want label_values(<selector>, %s)", v.query(), name)
	}
	if !v.Multi {
		bad("not multi-select")
	}
	if !v.IncludeAll {
		bad("no All option (includeAll)")
	}
	if v.Datasource == nil || v.Datasource.UID != dsVar {
		bad("data source %v, want uid %s", v.Datasource, dsVar)
	}
	return out
}

// selectorMatcher checks that every ferry_* selector of every target has label=~"$label".
func selectorMatcher(d *dashboard, label string) []string {
	var out []string
	d.targets(func(p panel, t target) {
		for _, s := range selectors(lex(t.Expr)) {
			if !slices.Contains(s.matchers, label+`=~"$`+label+`"`) {
				out = append(out, fmt.Sprintf("%s target %s: %s has no %s=~\"$%s\" matcher", p.name(), t.RefID, s.metric, label, label))
			}
		}
	})
	return out
}

// A token of a PromQL expression: an identifier, a string (quotes kept), a number, an operator or
// bracket, a range (the text between [ and ], brackets kept) or a $variable.
type token struct {
	kind byte // 'i' identifier, 's' string, 'n' number, 'r' range, 'v' variable, 'p' punctuation
	text string
}

var operators = []string{"=~", "!~", "!=", "==", ">=", "<=", "=", ">", "<", "+", "-", "*", "/", "%", "^", ",", "(", ")", "{", "}"}

// lex splits a PromQL expression into tokens; an unknown character becomes a punctuation token
// of its own (promqlProblems reports it).
func lex(expr string) []token {
	var out []token
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case isIdent(c, true):
			j := i + 1
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			out, i = append(out, token{'i', expr[i:j]}), j
		case c == '$':
			j := i + 1
			for j < len(expr) && (isIdent(expr[j], false) || expr[j] == '{' || expr[j] == '}') {
				if expr[j] == '}' {
					j++
					break
				}
				j++
			}
			out, i = append(out, token{'v', expr[i:j]}), j
		case c >= '0' && c <= '9' || c == '.':
			j := i + 1
			for j < len(expr) && (expr[j] >= '0' && expr[j] <= '9' || expr[j] == '.' || expr[j] == 'e') {
				j++
			}
			out, i = append(out, token{'n', expr[i:j]}), j
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			j = min(j+1, len(expr))
			out, i = append(out, token{'s', expr[i:j]}), j
		case c == '[':
			j := strings.IndexByte(expr[i:], ']')
			if j < 0 {
				out, i = append(out, token{'p', "["}), i+1
				continue
			}
			out, i = append(out, token{'r', expr[i : i+j+1]}), i+j+1
		default:
			op := string(c)
			for _, o := range operators {
				if strings.HasPrefix(expr[i:], o) {
					op = o
					break
				}
			}
			out, i = append(out, token{'p', op}), i+len(op)
		}
	}
	return out
}

type selector struct {
	metric   string
	matchers []string // name op "value", without spaces
}

// selectors returns the ferry_* metric selectors of toks with their matchers.
func selectors(toks []token) []selector {
	var out []selector
	inBraces := false
	for i, t := range toks {
		switch {
		case t.kind == 'p' && t.text == "{":
			inBraces = true
		case t.kind == 'p' && t.text == "}":
			inBraces = false
		case t.kind == 'i' && !inBraces && strings.HasPrefix(t.text, "ferry_") && !(i+1 < len(toks) && toks[i+1].text == "("):
			s := selector{metric: t.text}
			if i+1 < len(toks) && toks[i+1].text == "{" {
				var m strings.Builder
				for _, u := range toks[i+2:] {
					if u.kind == 'p' && (u.text == "}" || u.text == ",") {
						if m.Len() > 0 {
							s.matchers = append(s.matchers, m.String())
						}
						m.Reset()
						if u.text == "}" {
							break
						}
						continue
					}
					m.WriteString(u.text)
				}
			}
			out = append(out, s)
		}
	}
	return out
}

var rangeFuncs = []string{"rate", "irate", "increase", "deriv"}

// rateIntervals reports every rate(), irate(), increase() and deriv() whose range is not
// [$__rate_interval].
func rateIntervals(toks []token) []string {
	var out []string
	for i, t := range toks {
		if t.kind != 'i' || !slices.Contains(rangeFuncs, t.text) || i+1 >= len(toks) || toks[i+1].text != "(" {
			continue
		}
		depth, found := 0, false
		for _, u := range toks[i+1:] {
			if u.kind == 'p' && (u.text == "(") {
				depth++
			} else if u.kind == 'p' && u.text == ")" {
				if depth--; depth == 0 {
					break
				}
			} else if u.kind == 'r' && depth == 1 {
				found = true
				if u.text != "[$__rate_interval]" {
					out = append(out, fmt.Sprintf("%s() over %s, want [$__rate_interval]", t.text, u.text))
				}
			}
		}
		if !found {
			out = append(out, fmt.Sprintf("%s() without a range", t.text))
		}
	}
	return out
}

// knownFuncs are the functions, aggregations and keywords followed by "(" that the dashboard
// may use; anything else is probably a typo.
var knownFuncs = []string{
	"sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile", "stddev",
	"rate", "irate", "increase", "deriv", "delta", "histogram_quantile",
	"by", "without", "on", "ignoring", "group_left", "group_right",
	"clamp_min", "clamp_max", "abs", "ceil", "floor", "round", "absent", "vector", "scalar",
	"avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "label_values",
}

// promqlProblems is a light check of expr: not empty, brackets balanced, only known functions.
func promqlProblems(expr string) []string {
	if strings.TrimSpace(expr) == "" {
		return []string{"empty expr"}
	}
	var out []string
	toks := lex(expr)
	var stack []string
	pairs := map[string]string{")": "(", "}": "{"}
	for i, t := range toks {
		switch {
		case t.kind == 'p' && (t.text == "(" || t.text == "{"):
			stack = append(stack, t.text)
		case t.kind == 'p' && (t.text == ")" || t.text == "}"):
			if len(stack) == 0 || stack[len(stack)-1] != pairs[t.text] {
				out = append(out, fmt.Sprintf("unbalanced %q in %s", t.text, expr))
				return out
			}
			stack = stack[:len(stack)-1]
		case t.kind == 'p' && !slices.Contains(operators, t.text):
			out = append(out, fmt.Sprintf("unexpected %q (an unclosed [ or stray character) in %s", t.text, expr))
		case t.kind == 's' && (len(t.text) < 2 || t.text[len(t.text)-1] != t.text[0]):
			out = append(out, fmt.Sprintf("unterminated string %s", t.text))
		case t.kind == 'r' && strings.ContainsAny(t.text[1:len(t.text)-1], "[("):
			out = append(out, fmt.Sprintf("malformed range %s", t.text))
		case t.kind == 'i' && i+1 < len(toks) && toks[i+1].text == "(" && !slices.Contains(knownFuncs, t.text):
			out = append(out, fmt.Sprintf("unknown function %s()", t.text))
		}
	}
	if len(stack) > 0 {
		out = append(out, fmt.Sprintf("unclosed %q in %s", strings.Join(stack, ""), expr))
	}
	return out
}

func load(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile("ferry.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("ferry.json: %v", err)
	}
	return &d
}

// TestDashboardLint checks ferry.json with each rule of the linter.
func TestDashboardLint(t *testing.T) {
	d := load(t)
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			for _, msg := range r.check(d) {
				t.Errorf("%s: %s", r.name, msg)
			}
		})
	}
}

// TestRulesCatch feeds each PromQL rule an expression it must reject, and one it must accept, so
// that a rule that checks nothing cannot pass ferry.json.
func TestRulesCatch(t *testing.T) {
	const good = `histogram_quantile(0.99, sum by (stage, le) (rate(ferry_handler_seconds_bucket{job=~"$job",instance=~"$instance"}[$__rate_interval])))`
	for _, c := range []struct {
		rule, expr string
	}{
		{"target-job-rule", `sum(ferry_in_flight{instance=~"$instance"})`},
		{"target-job-rule", `sum(ferry_in_flight)`},
		{"target-instance-rule", `sum(ferry_in_flight{job=~"$job"}) / sum(ferry_ready{job=~"$job",instance=~"$instance"})`},
		{"target-rate-interval-rule", `rate(ferry_messages_total{job=~"$job",instance=~"$instance"}[5m])`},
		{"target-rate-interval-rule", `deriv(ferry_dlq_messages{job=~"$job",instance=~"$instance"})`},
		{"target-promql-rule", `sum(rate(ferry_messages_total{job=~"$job",instance=~"$instance"}[$__rate_interval])`},
		{"target-promql-rule", `summ(ferry_in_flight{job=~"$job",instance=~"$instance"})`},
		{"target-promql-rule", ` `},
	} {
		for _, expr := range []string{good, c.expr} {
			d := &dashboard{Panels: []panel{{ID: 1, Type: "timeseries", Title: "t", Targets: []target{{RefID: "A", Expr: expr}}}}}
			i := slices.IndexFunc(rules, func(r rule) bool { return r.name == c.rule })
			got := rules[i].check(d)
			if expr == good && len(got) > 0 {
				t.Errorf("%s rejects %s: %v", c.rule, expr, got)
			}
			if expr != good && len(got) == 0 {
				t.Errorf("%s accepts %s", c.rule, expr)
			}
		}
	}
}
