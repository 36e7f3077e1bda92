//go:build integration

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/ferry-migrate/ferry/tools/status"
)

// TestConsole runs a small job (about 200 seeded keys and 10 no read target holds), sets a
// throttle, serves `ferry console` and drives its page in headless Chromium: once the page has
// rendered, what it shows (verified, dead letters and their reason row with the download link,
// backlog, throttle, the stage rows, the chart, the job) must equal `ferry status --json`, and
// the link must download exactly the dead-lettered keys. A full-page screenshot is kept in
// .local/artifacts/console.png. Without chromium (`make browser` installs it) the test skips.
func TestConsole(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed: make browser installs it (the CI does)")
	}
	keys, _ := seeded(t)
	r := newRig(t, "", "console", rigOptions{})
	list, want := r.keySet(keys, 200, 10)
	var absent []string
	verified := 0
	for k, w := range want {
		switch w {
		case outcomeVerified:
			verified++
		case "fetcher/not_found":
			absent = append(absent, k)
		}
	}
	slices.Sort(absent)
	file := r.writeKeys("keys.txt", list)

	r.must("setup")
	r.must("throttle", "--read-rate", "500") // live throttle settings for the page to show
	addr := freeAddr(t)
	console := r.start("console", "console", "--listen", addr)
	r.waitUntil(time.Minute, func() string { return "ferry console answering 200 on http://" + addr + "/" }, func() bool {
		if !console.alive() {
			b, _ := os.ReadFile(console.log)
			t.Fatalf("ferry console exited (exit %d):\n%s", exitCode(console.err), tail(b, 3000))
		}
		code, _ := httpGet(t, addr, "/")
		return code == http.StatusOK
	})

	// The job runs while the console watches it.
	c := r.crew()
	c.add("producer", 1, "producer", "--keys", file)
	for _, s := range []string{"fetcher", "uploader", "verifier"} {
		c.add(s, 1, s, "--concurrency", "4")
	}
	c.settle(5 * time.Minute)
	c.stop()
	r.reconcile(plan{want: want})

	// At rest now: the numbers stay put, so the page must show exactly these.
	st := r.status()
	if st.Verified.Messages != uint64(verified) || st.DeadLetters.Total != uint64(len(absent)) ||
		st.DeadLetters.ByReason["fetcher/not_found"] != uint64(len(absent)) || st.Backlog != 0 {
		t.Fatalf("status --json: verified %d, dead letters %+v, backlog %d; want %d, fetcher/not_found %d, 0",
			st.Verified.Messages, st.DeadLetters, st.Backlog, verified, len(absent))
	}

	base := "http://" + addr + "/"
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1000))...)
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(browserCtx, 60*time.Second)
	defer cancel()

	// Uncaught exceptions and requests to anywhere but the console: the page is one file served
	// from the binary and must fetch nothing from elsewhere.
	var (
		mu       sync.Mutex
		thrown   []string
		foreign  []string
		watchers sync.WaitGroup
	)
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	requests := chromedp.Events(ctx, network.RequestWillBeSent)
	watchers.Go(func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			msg := "?"
			if d := ev.ExceptionDetails; d != nil {
				msg = d.Text
				if d.Exception != nil && d.Exception.Description != "" {
					msg += ": " + d.Exception.Description
				}
			}
			mu.Lock()
			thrown = append(thrown, msg)
			mu.Unlock()
		}
	})
	watchers.Go(func() {
		for ev, err := range requests {
			if err != nil {
				return
			}
			if ev.Request == nil {
				continue
			}
			u, perr := url.Parse(ev.Request.URL)
			if perr == nil && (u.Scheme == "data" || u.Scheme == "blob" || u.Scheme == "about") {
				continue
			}
			if perr != nil || u.Host != addr {
				mu.Lock()
				foreign = append(foreign, ev.Request.URL)
				mu.Unlock()
			}
		}
	})

	shot := filepath.Join("..", ".local", "artifacts", "console.png")
	screenshot := func() {
		// Quality 100: a PNG (below 100 chromedp captures a JPEG).
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			if err = os.MkdirAll(filepath.Dir(shot), 0o755); err == nil {
				err = os.WriteFile(shot, buf, 0o644)
			}
		}
		if err != nil {
			t.Errorf("screenshot: %v", err)
			return
		}
		abs, _ := filepath.Abs(shot)
		t.Logf("screenshot of the console: %s", abs)
	}

	// The page polls /api/status every 2 s: it has rendered once #verified shows a number.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.CSS("#verified")),
		chromedp.Poll[chromedp.Void](`(() => { const e = document.querySelector('#verified'); return !!e && /\d/.test(e.textContent); })()`,
			chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(40*time.Second)),
	); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
		screenshot()
		t.Fatalf("the console page at %s did not render #verified: %v\npage text:\n%s", base, err, tail([]byte(text), 2000))
	}

	// Compare; a poll of the page that has not caught up yet gets a few more seconds.
	var (
		view     consoleView
		problems []string
	)
	for deadline := time.Now().Add(15 * time.Second); ; {
		view, err = chromedp.Run(ctx, chromedp.Evaluate[consoleView](consoleViewJS))
		if err != nil {
			screenshot()
			t.Fatalf("reading the console page: %v", err)
		}
		if problems = view.differences(st, r.job); len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	screenshot()
	for _, p := range problems {
		t.Errorf("console page vs `ferry status --json`: %s", p)
	}

	// The reason row's link downloads the reason's dead letters as `ferry dlq export` writes them.
	if view.Download == nil || *view.Download == "" {
		t.Error(`no a.download link in tr[data-reason="fetcher/not_found"]`)
	} else if u, err := url.Parse(*view.Download); err != nil || u.Host != addr {
		t.Errorf("download link %q: not served by the console at %s (%v)", *view.Download, addr, err)
	} else {
		code, body, err := fetch(*view.Download)
		// The lines of `ferry dlq export`: key, stage, reason, attempts, error, tab-separated.
		var got []string
		for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
			key, rest, _ := strings.Cut(line, "\t")
			if !strings.HasPrefix(rest, "fetcher\tnot_found\t") {
				t.Errorf("download line %q: not a fetcher/not_found dead letter as dlq export writes it", line)
			}
			got = append(got, key)
		}
		slices.Sort(got)
		if err != nil || code != http.StatusOK || !slices.Equal(got, absent) {
			t.Errorf("GET %s: %d %v, %d lines, want the %d dead-lettered keys:\n%s", *view.Download, code, err, len(got), len(absent), tail([]byte(body), 2000))
		}
	}

	cancel()
	watchers.Wait()
	mu.Lock()
	for _, e := range thrown {
		t.Errorf("uncaught exception in the console page: %s", e)
	}
	if len(foreign) > 0 {
		t.Errorf("the console page requested %d URLs elsewhere than %s, e.g. %q", len(foreign), addr, foreign[:min(5, len(foreign))])
	}
	mu.Unlock()
	if err := console.stop(30 * time.Second); err != nil {
		t.Errorf("ferry console did not shut down cleanly on SIGTERM: %v", err)
	}
}

// consoleView is what the console page shows, read by consoleViewJS; nil: the element is missing.
type consoleView struct {
	Job             *string            `json:"job"`
	Verified        *string            `json:"verified"`
	DeadTotal       *string            `json:"dead_total"`
	Backlog         *string            `json:"backlog"`
	ThrottleFetcher *string            `json:"throttle_fetcher"`
	ReasonRow       bool               `json:"reason_row"`
	ReasonCount     *string            `json:"reason_count"`
	Download        *string            `json:"download"` // the link's href, resolved by the browser
	ChartSVG        bool               `json:"chart_svg"`
	Stages          map[string]*string `json:"stages"` // stage → its row's .messages text; nil: no row or no cell
}

const consoleViewJS = `(() => {
  const text = (sel, root) => { const e = (root || document).querySelector(sel); return e ? e.textContent.trim() : null; };
  const row = document.querySelector('tr[data-reason="fetcher/not_found"]');
  const link = row ? row.querySelector('a.download') : null;
  const stages = {};
  for (const s of ['fetcher', 'uploader', 'verifier']) {
    const r = document.querySelector('tr[data-stage="' + s + '"]');
    stages[s] = r ? text('.messages', r) : null;
  }
  return {
    job: text('#job'),
    verified: text('#verified'),
    dead_total: text('#dead-total'),
    backlog: text('#backlog'),
    throttle_fetcher: text('#throttle-fetcher'),
    reason_row: !!row,
    reason_count: row ? text('.count', row) : null,
    download: link ? link.href : null,
    chart_svg: !!document.querySelector('#chart svg'),
    stages: stages,
  };
})()`

// differences lists where the page disagrees with st (of job).
func (v consoleView) differences(st *status.Status, job string) []string {
	var out []string
	count := func(what string, got *string, want uint64) {
		n, err := pageCount(got)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", what, err))
		} else if n != want {
			out = append(out, fmt.Sprintf("%s shows %d, status --json %d", what, n, want))
		}
	}
	count("#verified", v.Verified, st.Verified.Messages)
	count("#dead-total", v.DeadTotal, st.DeadLetters.Total)
	count("#backlog", v.Backlog, st.Backlog)
	if !v.ReasonRow {
		out = append(out, `no row tr[data-reason="fetcher/not_found"]`)
	} else {
		count(`tr[data-reason="fetcher/not_found"] .count`, v.ReasonCount, st.DeadLetters.ByReason["fetcher/not_found"])
	}
	if v.ThrottleFetcher == nil || !strings.Contains(*v.ThrottleFetcher, "500") {
		out = append(out, fmt.Sprintf("#throttle-fetcher %s lacks the read rate 500", quoted(v.ThrottleFetcher)))
	}
	if !v.ChartSVG {
		out = append(out, "no #chart svg")
	}
	if v.Job == nil || *v.Job != job {
		out = append(out, fmt.Sprintf("#job %s, want %q", quoted(v.Job), job))
	}
	for _, s := range []string{"fetcher", "uploader", "verifier"} {
		if v.Stages[s] == nil {
			out = append(out, fmt.Sprintf(`no row tr[data-stage=%q] with a .messages cell`, s))
		}
	}
	return out
}

var digitsOnly = regexp.MustCompile(`^[0-9]+$`)

// pageCount is a count as the page shows it: digits, with commas between thousands.
func pageCount(s *string) (uint64, error) {
	if s == nil {
		return 0, errors.New("missing")
	}
	d := strings.ReplaceAll(strings.TrimSpace(*s), ",", "")
	if !digitsOnly.MatchString(d) {
		return 0, fmt.Errorf("%q is not a count", *s)
	}
	return strconv.ParseUint(d, 10, 64)
}

func quoted(s *string) string {
	if s == nil {
		return "(missing)"
	}
	return strconv.Quote(*s)
}

// fetch GETs a URL: its status and body.
func fetch(u string) (int, string, error) {
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
