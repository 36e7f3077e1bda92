package console

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/limit"
)

// TestServer: the page is one self-contained document; /api/status is ferry status's JSON with
// the history and the throttle settings; /api/dlq/keys.txt answers the dead letters of a stage
// and reason as `ferry dlq export` writes them (escaped), and refuses an unknown stage.
func TestServer(t *testing.T) {
	ctx := context.Background()
	js, n := bustest.Job(t)
	for i, key := range []string{"a.jpg", "b\x1b.jpg", "c.jpg"} {
		reason := bus.ReasonNotFound
		if i == 2 {
			reason = bus.ReasonSourceError
		}
		h := nats.Header{}
		h.Set(bus.HdrID, bus.KeyID(n.Job, key))
		if err := bus.PublishDeadLetter(ctx, js, n, bus.DeadLetter{Key: key, Stage: bus.StageFetcher, Reason: reason, Err: "gone", Attempts: 1, From: h}); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := js.KeyValue(ctx, n.KV)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, limit.ThrottleKey(bus.StageFetcher), []byte(`{"per_sec":500}`)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&Server{JS: js, Names: n, Log: slog.Default()}).Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := get("/")
	if code != 200 || !strings.Contains(body, `id="verified"`) {
		t.Fatalf("page: %d %.200s", code, body)
	}
	for _, ref := range []string{"http://", "https://", "<script src", "<link"} {
		if strings.Contains(body, ref) {
			t.Errorf("page fetches from elsewhere: %q", ref)
		}
	}

	code, body = get("/api/status")
	var v View
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("/api/status: %d %v %.200s", code, err, body)
	}
	if v.Status.Job != n.Job || v.Status.DeadLetters.Total != 3 || v.Status.DeadLetters.ByReason["fetcher/not_found"] != 2 {
		t.Errorf("status %+v", v.Status.DeadLetters)
	}
	if len(v.History) != 1 || v.History[0].Dead != 3 {
		t.Errorf("history %+v, want the one sample just taken", v.History)
	}
	if f := v.Throttle[bus.StageFetcher]; !f.Set || f.Is.PerSec != 500 {
		t.Errorf("fetcher throttle %+v", f)
	}
	if u := v.Throttle[bus.StageUploader]; u.Set {
		t.Errorf("uploader throttle %+v, want none", u)
	}

	code, body = get("/api/dlq/keys.txt?stage=fetcher&reason=not_found")
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if code != 200 || len(lines) != 2 || !strings.HasPrefix(lines[0], "a.jpg\tfetcher\tnot_found\t") || !strings.HasPrefix(lines[1], `b\x1b.jpg`) {
		t.Errorf("keys: %d %q", code, body)
	}
	if code, _ := get("/api/dlq/keys.txt?stage=nope"); code != http.StatusBadRequest {
		t.Errorf("unknown stage: %d, want 400", code)
	}
}
