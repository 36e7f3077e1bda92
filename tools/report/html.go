package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// FileHTML is the report a person looks at: report.md's numbers with the charts.
const FileHTML = "report.html"

// chartPoints bounds the points of the verified-per-time chart: a 40-day run's 57,600 minutes
// are summed into hours, then days (Step), like report.md's table.
const chartPoints = 2000

// HTML writes report.html: one self-contained page (inline CSS and SVG, nothing fetched), the
// outcome and the proof, a chart of the files verified over the whole run, where a stall shows as
// a drop to zero, and the dead letters by stage and reason as bars.
func HTML(w io.Writer, r *Report) error {
	step, label := Step(r.PerMinute)
	for len(r.PerMinute) > 0 && int(time.Duration(len(r.PerMinute))*time.Minute/step) > chartPoints {
		step *= 2 // only past Step's day buckets: years of minutes
	}
	v := htmlView{R: r, Label: label, Chart: rateChart(rates(r.PerMinute, step)), Dead: deadBars(r)}
	v.Failed = r.DeadLettered - r.DeletedAtSource
	if r.FirstVerified != nil && r.ElapsedSeconds > 0 {
		v.Mean = fmt.Sprintf("%.0f", float64(r.Verified)/r.ElapsedSeconds)
		v.Elapsed = time.Duration(r.ElapsedSeconds * float64(time.Second)).Round(time.Second).String()
	}
	return htmlPage.Execute(w, v)
}

type htmlView struct {
	R             *Report
	Failed        uint64
	Label         string
	Chart         template.HTML
	Dead          template.HTML
	Mean, Elapsed string
}

// rate is the files verified per second over the minutes of one chart point.
type rate struct {
	start   time.Time
	perSec  float64
	minutes int
}

// rates sums per-minute buckets into points of step (UTC-aligned) and divides each by the
// minutes it covers, so that the run's first and last (partial) hour or day read as what they
// were, not as a drop.
func rates(b []Bucket, step time.Duration) []rate {
	var out []rate
	var sum uint64
	flush := func() {
		if n := len(out); n > 0 {
			out[n-1].perSec = float64(sum) / (float64(out[n-1].minutes) * 60)
		}
	}
	for _, m := range b {
		start := m.Minute.Truncate(step)
		if len(out) == 0 || !out[len(out)-1].start.Equal(start) {
			flush()
			out, sum = append(out, rate{start: start}), 0
		}
		out[len(out)-1].minutes++
		sum += m.Verified
	}
	flush()
	return out
}

// rateChart is an SVG line of files verified per second at each point, over time.
func rateChart(b []rate) template.HTML {
	if len(b) == 0 {
		return template.HTML(`<p>Nothing verified yet.</p>`)
	}
	const w, h, left, bottom, top = 900.0, 260.0, 60.0, 30.0, 10.0
	var peak float64
	for _, x := range b {
		peak = max(peak, x.perSec)
	}
	peak = niceCeil(peak)
	x := func(i int) float64 {
		if len(b) == 1 {
			return left + (w-left)/2
		}
		return left + float64(i)*(w-left-10)/float64(len(b)-1)
	}
	y := func(v float64) float64 { return top + (h-top-bottom)*(1-v/peak) }
	var pts strings.Builder
	for i, r := range b {
		fmt.Fprintf(&pts, "%.1f,%.1f ", x(i), y(r.perSec))
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg class="chart" id="verified-chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="files verified per second over the run" data-points="%d" data-peak="%g">`,
		w, h, len(b), peak)
	// Axes and gridlines at 0, half and the peak.
	for _, f := range []float64{0, 0.5, 1} {
		fmt.Fprintf(&s, `<line class="grid" x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f"/><text class="axis" x="%.0f" y="%.1f" text-anchor="end">%s/s</text>`,
			left, w-10, y(f*peak), y(f*peak), left-6, y(f*peak)+4, trimFloat(f*peak))
	}
	fmt.Fprintf(&s, `<polygon class="area" points="%.1f,%.1f %s%.1f,%.1f"/>`, x(0), y(0), pts.String(), x(len(b)-1), y(0))
	fmt.Fprintf(&s, `<polyline class="line" points="%s"/>`, strings.TrimSpace(pts.String()))
	// Time labels: the first, the middle and the last bucket.
	for _, i := range []int{0, len(b) / 2, len(b) - 1} {
		anchor := map[int]string{0: "start", len(b) - 1: "end"}[i]
		if anchor == "" {
			anchor = "middle"
		}
		fmt.Fprintf(&s, `<text class="axis" x="%.1f" y="%.0f" text-anchor="%s">%s</text>`, x(i), h-8, anchor, b[i].start.UTC().Format("2006-01-02 15:04"))
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

// deadBars is an SVG bar per stage/reason of the failure dead letters, longest first.
func deadBars(r *Report) template.HTML {
	type bar struct {
		name string
		n    uint64
	}
	var bars []bar
	var most uint64
	for _, sr := range sortedKeys(r.DeadLetters) {
		if _, reason, _ := strings.Cut(sr, "/"); reason == bus.ReasonDeleted {
			continue
		}
		bars = append(bars, bar{sr, r.DeadLetters[sr]})
		most = max(most, r.DeadLetters[sr])
	}
	if len(bars) == 0 {
		return template.HTML(`<p class="ok">No dead letters: every key that left the pipeline is verified in S3.</p>`)
	}
	const w, row, labelW = 900.0, 26.0, 260.0
	var s strings.Builder
	fmt.Fprintf(&s, `<svg class="chart" id="dead-chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="dead letters by stage and reason" data-bars="%d">`, w, row*float64(len(bars))+4, len(bars))
	for i, b := range bars {
		yy := float64(i)*row + 2
		bw := (w - labelW - 90) * float64(b.n) / float64(most)
		fmt.Fprintf(&s, `<text class="axis" x="%.0f" y="%.1f" text-anchor="end">%s</text><rect class="bar" x="%.0f" y="%.1f" width="%.1f" height="%.0f"><title>%s: %d</title></rect><text class="axis" x="%.1f" y="%.1f">%s</text>`,
			labelW-8, yy+row*0.65, template.HTMLEscapeString(b.name), labelW, yy, max(bw, 1), row-6, template.HTMLEscapeString(b.name), b.n, labelW+max(bw, 1)+6, yy+row*0.65, num(b.n))
	}
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
}

var htmlPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"num":      num,
	"num64":    func(n int64) string { return num(uint64(max(n, 0))) },
	"since":    passSince,
	"ended":    passEnd,
	"meaning":  func(reason string) string { return meaning[reason] },
	"reasonOf": func(sr string) string { _, reason, _ := strings.Cut(sr, "/"); return reason },
	"utc": func(t any) string {
		switch t := t.(type) {
		case time.Time:
			return t.UTC().Format(time.DateTime + " UTC")
		case *time.Time:
			if t != nil {
				return t.UTC().Format(time.DateTime + " UTC")
			}
		}
		return ""
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ferry report: {{.R.Job}}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.chart{width:100%;height:auto}.grid{stroke:#ddd}.axis{font-size:12px;fill:#555}
.line{fill:none;stroke:#1f6feb;stroke-width:1.5}.area{fill:#1f6feb22}.bar{fill:#d1242f}
.proven{color:#1a7f37;font-weight:bold}.notproven{color:#d1242f;font-weight:bold}.ok{color:#1a7f37}
</style></head><body>
<h1>ferry report: job {{.R.Job}}</h1>
<p>Written {{utc .R.Time}} from the job's NATS streams{{if .R.Manifest.ResolutionsRead}} and {{.R.Manifest.ResolutionsRead}} manifest resolutions{{end}}{{if .R.Manifest.Read}} and {{.R.Manifest.Read}} manifest segments{{end}}.</p>
<h2>Outcome</h2>
<table id="outcome">
<tr><td>published to KEYS</td><td class="n" id="published">{{num .R.Published}}</td></tr>
<tr><td>verified in S3 (size and checksum)</td><td class="n" id="verified">{{num .R.Verified}}</td></tr>
<tr><td>dead-lettered</td><td class="n" id="dead">{{num .Failed}}</td></tr>
{{if .R.DeletedAtSource}}<tr><td>deleted at the source (not failures)</td><td class="n">{{num .R.DeletedAtSource}}</td></tr>{{end}}
<tr><td>still in the pipeline</td><td class="n" id="pipeline">{{num .R.InPipeline}}</td></tr>
</table>
{{with .R.Discrepancy}}<p class="notproven">The counts do not add up: {{.}}.</p>{{end}}
<h2>Cut-over proof</h2>
{{if eq .R.ProofStatus "PROVEN"}}<p class="proven" id="proof">PROVEN</p>{{else if eq .R.ProofStatus "NOT PROVEN"}}<p class="notproven" id="proof">NOT PROVEN: {{.R.ProofWhy}}</p>{{else}}<p id="proof">None yet: <code>ferry prune --dry-run</code> proves the cut-over; report.md says what it needs.</p>{{end}}
<h2>Verified per second, per {{.Label}}</h2>
{{if .Mean}}<p>{{num .R.Verified}} keys verified in {{.Elapsed}} (first to last verified), {{.Mean}} keys/s on average; a stall shows as a drop to zero.</p>{{end}}
{{.Chart}}
<h2>Dead letters by stage and reason</h2>
{{.Dead}}
{{if .Failed}}<table id="dead-letters"><tr><th>stage/reason</th><th>keys</th><th>meaning</th></tr>
{{range $sr, $n := .R.DeadLetters}}<tr><td><code>{{$sr}}</code></td><td class="n">{{num $n}}</td><td>{{meaning (reasonOf $sr)}}</td></tr>
{{end}}</table>
<p>Every key is in <code>dlq-keys.txt</code> and, with its error, in <code>dlq.jsonl</code>; <code>ferry --job {{.R.Job}} dlq replay --reason REASON</code> sends them again once the cause is fixed.</p>{{end}}
{{if .R.Scans}}<h2>Passes</h2>
<table id="passes"><tr><th>table</th><th>pass</th><th>since</th><th>started</th><th>ended</th><th>keys read</th><th>published</th><th>complete</th></tr>
{{range $sc := .R.Scans}}{{range .Passes}}<tr data-pass="{{.N}}"><td>{{$sc.Table}}</td><td class="n">{{.N}}</td><td>{{since .}}</td><td>{{utc .Start}}</td><td>{{ended .}}</td><td class="n">{{num64 .Scanned}}</td><td class="n">{{num64 .Published}}</td><td>{{if .Complete}}yes{{else}}no{{end}}</td></tr>
{{end}}{{end}}</table>{{end}}
<h2>Time</h2>
<table><tr><td>job created (KEYS stream)</td><td>{{utc .R.JobCreated}}</td></tr>
{{if .R.FirstVerified}}<tr><td>first verified</td><td>{{utc .R.FirstVerified}}</td></tr><tr><td>last verified</td><td>{{utc .R.LastVerified}}</td></tr>{{end}}
</table>
</body></html>
`))
