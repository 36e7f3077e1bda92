package report

import (
	"bytes"
	"encoding/xml"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/tools/status"
)

// TestHTML: report.html shows the outcome, the proof, the verified rate over the whole run (a
// stall as zeros, a 40-day run in days) and the dead letters as bars; it is one self-contained
// page whose SVG is well-formed and whose text is escaped.
func TestHTML(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	minutes := func(counts ...uint64) []Bucket {
		var b []Bucket
		for i, c := range counts {
			b = append(b, Bucket{Minute: start.Add(time.Duration(i) * time.Minute), Verified: c})
		}
		return b
	}
	long := make([]uint64, 40*24*60)
	for i := range long {
		long[i] = 60 * 1000
	}
	first, last := start, start.Add(9*time.Minute)
	for _, tc := range []struct {
		name string
		r    Report
		want []string // substrings of the page
		not  []string
		pts  int // points of the verified chart; 0: no chart
	}{
		{"a stall in the middle", Report{Job: "photos", Published: 3010, Verified: 3000, DeadLettered: 10,
			DeadLetters: map[string]uint64{"fetcher/not_found": 7, "uploader/upload_error": 3},
			PerMinute:   minutes(600, 600, 600, 0, 0, 0, 600, 600, 0, 0), FirstVerified: &first, LastVerified: &last, ElapsedSeconds: 540,
			ProofStatus: ProofProven},
			[]string{`id="verified">3,000<`, `id="dead">10<`, `class="proven" id="proof">PROVEN<`, `data-bars="2"`, `fetcher/not_found`, `per minute`, `10/s`, `dlq replay`},
			nil, 10},
		{"nothing verified yet", Report{Job: "j", Published: 5, InPipeline: 5},
			[]string{"Nothing verified yet.", "No dead letters", `None yet`}, []string{"verified-chart"}, 0},
		{"40 days in days", Report{Job: "big", Verified: 40 * 24 * 60 * 60 * 1000, PerMinute: minutes(long...), ProofStatus: ProofFailed, ProofWhy: "2 keys missing in S3"},
			[]string{"per day", `NOT PROVEN: 2 keys missing in S3`}, nil, 41}, // two partial days at the ends
		{"passes", Report{Job: "p", Scans: []status.Scan{{Table: "photos.blobs", Passes: []checkpoint.Pass{
			{N: 1, Start: start, End: start.Add(time.Hour), Scanned: 1000, Published: 1000, Complete: true},
			{N: 2, Since: start.UnixMicro(), Start: start.Add(2 * time.Hour), Scanned: 1000, Published: 12}}}}},
			[]string{`<tr data-pass="1">`, "<td>full</td>", `<tr data-pass="2">`, "since 2026-12-01 10:00:00", "running", "<td class=\"n\">12</td>"}, nil, 0},
		{"escaped", Report{Job: `<script>x</script>`, DeadLettered: 1, DeadLetters: map[string]uint64{"fetcher/<b>": 1}},
			[]string{"&lt;script&gt;x&lt;/script&gt;", "fetcher/&lt;b&gt;"}, []string{"<script>x", "<b>"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := HTML(&b, &tc.r); err != nil {
				t.Fatal(err)
			}
			page := b.String()
			for _, w := range tc.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(page, n) {
					t.Errorf("page holds %q", n)
				}
			}
			for _, ref := range []string{"http://", "https://", "<script", "<link"} {
				if strings.Contains(strings.ToLower(page), ref) {
					t.Errorf("page is not self-contained: %q", ref)
				}
			}
			svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(page, -1)
			for _, svg := range svgs {
				if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
					t.Errorf("SVG not well-formed: %v", err)
				}
			}
			m := regexp.MustCompile(`<polyline class="line" points="([^"]*)"`).FindStringSubmatch(page)
			if tc.pts == 0 {
				if m != nil {
					t.Errorf("a chart of nothing")
				}
				return
			}
			if m == nil || len(strings.Fields(m[1])) != tc.pts {
				t.Fatalf("chart points: %v, want %d", m, tc.pts)
			}
			if tc.name == "40 days in days" { // a steady pace, partial days included: a flat line
				for _, p := range strings.Fields(m[1]) {
					if !strings.HasSuffix(p, ",10.0") {
						t.Errorf("steady run drawn unsteady: %v", m[1])
						break
					}
				}
			}
			if tc.name == "a stall in the middle" {
				p := strings.Fields(m[1])
				base := p[3][strings.Index(p[3], ",")+1:] // a zero minute is on the baseline
				if !strings.HasSuffix(p[4], ","+base) || strings.HasSuffix(p[0], ","+base) {
					t.Errorf("the stall is not at zero: %v", p)
				}
			}
		})
	}
}
