package blobstore

import (
	"context"
	"crypto/md5"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-migrate/ferry/shared/config"
)

// fakeS3 answers just enough of S3 for the middleware: PUT stores nothing, HEAD and GET of
// "missing" are 404, everything else is a 5-byte object. With drop set it closes every
// connection without an answer.
func fakeS3(t *testing.T) (*httptest.Server, *atomic.Bool) {
	t.Helper()
	var drop atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if drop.Load() {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		if strings.HasSuffix(r.URL.Path, "/missing") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("Content-Length", "5")
			_, _ = w.Write([]byte("hello"))
		case http.MethodHead:
			w.Header().Set("Content-Length", "5")
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &drop
}

func fakeClient(t *testing.T, endpoint string) *Client {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	c, err := New(context.Background(), config.Destination{Endpoint: endpoint, Bucket: "b", PathStyle: true, Timeout: 5 * time.Second}, 2)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// snapshot is the package's metrics as "name{label=value,…}" → count or value.
func snapshot(t *testing.T) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var l []string
			for _, p := range m.GetLabel() {
				l = append(l, p.GetName()+"="+p.GetValue())
			}
			k := mf.GetName() + "{" + strings.Join(l, ",") + "}"
			if h := m.GetHistogram(); h != nil {
				out[k] = float64(h.GetSampleCount())
			} else {
				out[k] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func delta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// forgetEndpoints clears the process-wide readiness state: another test of this package may have
// left an endpoint that never answered (integration_test.go dials port 1 on purpose).
func forgetEndpoints(t *testing.T) {
	t.Helper()
	endpointsMu.Lock()
	endpoints = map[string]*endpointState{}
	endpointsMu.Unlock()
}

func TestMiddlewareRecords(t *testing.T) {
	forgetEndpoints(t)
	srv, drop := fakeS3(t)
	c := fakeClient(t, srv.URL)
	ctx := context.Background()
	before := snapshot(t)

	body := []byte("hello")
	sum := md5.Sum(body)
	if _, err := c.Put(ctx, PutInput{Key: "a", Body: body, MD5: sum[:]}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Head(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Head(ctx, "missing"); err == nil {
		t.Fatal("head of missing: no error")
	}
	if b, err := c.Get(ctx, "a"); err != nil || string(b) != "hello" {
		t.Fatalf("get: %q %v", b, err)
	}
	want := map[string]float64{
		"ferry_s3_request_seconds{operation=PutObject,result=ok}":         1,
		"ferry_s3_request_seconds{operation=HeadObject,result=ok}":        1,
		"ferry_s3_request_seconds{operation=HeadObject,result=not_found}": 1,
		"ferry_s3_request_seconds{operation=GetObject,result=ok}":         1,
		"ferry_s3_bytes_total{operation=PutObject}":                       5,
		"ferry_s3_bytes_total{operation=GetObject}":                       5,
	}
	got := delta(before, snapshot(t))
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: +%g, want +%g (all changes: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("changes %v, want %v", got, want)
	}
	if err := Ready(); err != nil {
		t.Fatalf("ready after answers: %v", err)
	}

	// No answer at all: unready, named by bucket and endpoint, until the next answer.
	drop.Store(true)
	if _, err := c.Head(ctx, "a"); err == nil {
		t.Fatal("head with the connection dropped: no error")
	}
	err := Ready()
	if err == nil || !strings.Contains(err.Error(), "bucket b at "+srv.URL+": last request") {
		t.Fatalf("after a dropped connection: %v", err)
	}
	if d := delta(before, snapshot(t)); d["ferry_s3_request_seconds{operation=HeadObject,result=network_error}"] != 1 {
		t.Errorf("network_error not recorded: %v", d)
	}
	drop.Store(false)
	if _, err := c.Head(ctx, "missing"); err == nil {
		t.Fatal("head of missing: no error")
	}
	if err := Ready(); err != nil {
		t.Fatalf("a 404 is an answer: %v", err)
	}
}

func TestRequestResult(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{ctx.Err(), "canceled"},
		{context.DeadlineExceeded, "timeout"},
	} {
		if got := requestResult(c.err); got != c.want {
			t.Errorf("requestResult(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
