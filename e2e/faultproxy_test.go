//go:build integration

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultKind is one way the fault proxy breaks an S3 request.
type faultKind string

const (
	faultSlowDown faultKind = "slowdown" // 503 SlowDown; the request never reaches S3
	faultInternal faultKind = "internal" // 500 InternalError; the request never reaches S3
	faultReset    faultKind = "reset"    // TCP reset instead of an answer; the request never reaches S3
	faultLatency  faultKind = "latency"  // a pause of 1-3 s, then served normally
	faultCut      faultKind = "cut"      // served by S3, then the answer is cut off half way (or lost whole when it has no body)
)

var faultKinds = []faultKind{faultSlowDown, faultInternal, faultReset, faultLatency, faultCut}

// faultRates is the probability of each fault per request.
type faultRates map[faultKind]float64

func (r faultRates) total() float64 {
	var t float64
	for _, p := range r {
		t += p
	}
	return t
}

// defaultFaultRates spreads total (0.2: one request in five) over the kinds. FERRY_CHAOS_S3_FAULTS
// overrides total.
func defaultFaultRates(total float64) faultRates {
	if v, err := strconv.ParseFloat(os.Getenv("FERRY_CHAOS_S3_FAULTS"), 64); err == nil && v >= 0 && v <= 1 {
		total = v
	}
	return faultRates{faultSlowDown: total * 0.25, faultInternal: total * 0.2, faultReset: total * 0.2,
		faultLatency: total * 0.15, faultCut: total * 0.2}
}

// faultProxy is a reverse proxy in front of an S3 endpoint that injects faults at the configured
// rates and counts the object writes S3 acknowledged, so a test can tell duplicate PUTs. Requests
// on the bucket itself (the HeadBucket every service makes at start) are never broken: a service
// that fails to start is a different test.
type faultProxy struct {
	URL     string
	srv     *httptest.Server
	rp      *httputil.ReverseProxy
	bucket  string
	latency [2]time.Duration

	rates    atomic.Pointer[faultRates]
	requests atomic.Int64
	// randomETags replaces the ETag of every object write, HEAD and GET with a random value, as
	// S3 does for SSE-KMS and SSE-C objects (part ETags pass: the SDK signs the body that lists them).
	randomETags atomic.Bool
	// deny, when set, answers 403 AccessDenied to every write of an object whose key it matches (a
	// bucket policy on a prefix, an object lock).
	deny   atomic.Pointer[func(key string) bool]
	denied atomic.Int64
	down   *http.Server // serving the proxy's address again after Down; nil while up or never down
	mu     sync.Mutex
	faults map[faultKind]int
	writes map[string]int // object path -> object writes S3 acknowledged (PUT, CompleteMultipartUpload)
}

func newFaultProxy(t *testing.T, endpoint, bucket string, rates faultRates) *faultProxy {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatalf("fault proxy target %q: %v", endpoint, err)
	}
	p := &faultProxy{bucket: bucket, latency: [2]time.Duration{time.Second, 3 * time.Second},
		faults: map[faultKind]int{}, writes: map[string]int{}}
	p.SetRates(rates)
	p.rp = httputil.NewSingleHostReverseProxy(target) // keeps the Host header: SigV4 signed it
	// Keep connections to S3 alive: tens of thousands of short-lived ones would run the loopback
	// out of ephemeral ports (TIME_WAIT).
	p.rp.Transport = &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second,
		ExpectContinueTimeout: time.Second, DisableCompression: true}
	p.rp.ErrorLog = log.New(io.Discard, "", 0) // the cut answers are on purpose
	p.rp.ModifyResponse = func(resp *http.Response) error {
		if resp.StatusCode/100 == 2 && isObjectWrite(resp.Request) {
			p.mu.Lock()
			p.writes[resp.Request.URL.Path]++
			p.mu.Unlock()
		}
		if p.randomETags.Load() && resp.StatusCode/100 == 2 {
			return randomizeETag(resp)
		}
		return nil
	}
	p.rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		w.WriteHeader(http.StatusBadGateway)
	}
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.Start()
	p.URL = p.srv.URL
	t.Cleanup(p.srv.Close)
	return p
}

// SetRates changes the fault rates; nil or empty turns faults off.
func (p *faultProxy) SetRates(r faultRates) {
	if r == nil {
		r = faultRates{}
	}
	p.rates.Store(&r)
}

// isObjectWrite: a single PUT of an object (not a part, not a copy) or the completion of a
// multipart upload.
func isObjectWrite(r *http.Request) bool {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodPut:
		return !q.Has("partNumber") && !q.Has("uploadId") && r.Header.Get("X-Amz-Copy-Source") == ""
	case http.MethodPost:
		return q.Has("uploadId")
	}
	return false
}

func (p *faultProxy) pick(r *http.Request) faultKind {
	if strings.Trim(r.URL.Path, "/") == p.bucket || r.URL.Path == "/" {
		return ""
	}
	x := rand.Float64()
	rates := *p.rates.Load()
	for _, k := range faultKinds {
		if x < rates[k] {
			return k
		}
		x -= rates[k]
	}
	return ""
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if deny := p.deny.Load(); deny != nil && (r.Method == http.MethodPut || r.Method == http.MethodPost) &&
		(*deny)(strings.TrimPrefix(r.URL.Path, "/"+p.bucket+"/")) {
		p.denied.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		s3Error(w, http.StatusForbidden, "AccessDenied", "Access Denied")
		return
	}
	kind := p.pick(r)
	if kind != "" {
		p.mu.Lock()
		p.faults[kind]++
		p.mu.Unlock()
	}
	switch kind {
	case faultSlowDown:
		_, _ = io.Copy(io.Discard, r.Body)
		s3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case faultInternal:
		_, _ = io.Copy(io.Discard, r.Body)
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case faultReset:
		resetConn(w)
	case faultLatency:
		time.Sleep(p.latency[0] + rand.N(p.latency[1]-p.latency[0]+1))
		p.rp.ServeHTTP(w, r)
	case faultCut:
		p.rp.ServeHTTP(&cutWriter{ResponseWriter: w, head: r.Method == http.MethodHead}, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

// Deny makes S3 refuse (403 AccessDenied) every write of an object whose key matches; nil stops.
func (p *faultProxy) Deny(match func(key string) bool) {
	if match == nil {
		p.deny.Store(nil)
		return
	}
	p.deny.Store(&match)
}

// RandomETags turns the replacement of ETags on or off.
func (p *faultProxy) RandomETags(on bool) { p.randomETags.Store(on) }

// Down makes S3 unreachable: the proxy's port refuses connections and open ones are closed, as
// when a whole S3 endpoint is gone. Up serves it again on the same address.
func (p *faultProxy) Down(t *testing.T) {
	t.Helper()
	if p.down != nil {
		_ = p.down.Close()
		p.down = nil
	} else {
		_ = p.srv.Listener.Close()
	}
	p.srv.CloseClientConnections()
}

// Up ends a Down.
func (p *faultProxy) Up(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", p.srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("fault proxy up again: %v", err)
	}
	p.down = &http.Server{Handler: p, ErrorLog: log.New(io.Discard, "", 0)}
	srv := p.down
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

var etagXML = regexp.MustCompile(`<ETag>[^<]*</ETag>`)

// randomizeETag gives resp a random ETag: in the header of a PUT, HEAD or GET, and in the XML of a
// CompleteMultipartUpload. A part's ETag is left as it is.
func randomizeETag(resp *http.Response) error {
	q := resp.Request.URL.Query()
	if q.Has("partNumber") {
		return nil
	}
	fake := fmt.Sprintf(`"%016x%016x"`, rand.Uint64(), rand.Uint64())
	if resp.Header.Get("ETag") != "" {
		resp.Header.Set("ETag", fake)
	}
	if resp.Request.Method == http.MethodPost && q.Has("uploadId") {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		b = etagXML.ReplaceAll(b, []byte("<ETag>"+html.EscapeString(fake)+"</ETag>"))
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	}
	return nil
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>faultproxy</RequestId></Error>`, code, msg)
}

// resetConn drops the client's connection with a TCP reset.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

var errCut = errors.New("faultproxy: response cut off")

// cutWriter passes S3's status and headers, then half the body, and drops the connection. A
// response without a body (a PUT's, a HEAD's) is lost whole: S3 did the work, the client never
// hears of it.
type cutWriter struct {
	http.ResponseWriter
	head             bool
	limit, written   int64
	dropped, started bool
}

func (c *cutWriter) WriteHeader(code int) {
	if code < 200 { // 100 Continue: pass it on
		c.ResponseWriter.WriteHeader(code)
		return
	}
	cl, _ := strconv.ParseInt(c.Header().Get("Content-Length"), 10, 64)
	if c.head || cl <= 0 {
		c.dropped = true
		resetConn(c.ResponseWriter)
		return
	}
	c.started, c.limit = true, cl/2
	c.ResponseWriter.WriteHeader(code)
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if c.dropped {
		return 0, errCut
	}
	if !c.started {
		c.WriteHeader(http.StatusOK)
		if c.dropped {
			return 0, errCut
		}
	}
	if c.written+int64(len(b)) <= c.limit {
		n, err := c.ResponseWriter.Write(b)
		c.written += int64(n)
		return n, err
	}
	n, _ := c.ResponseWriter.Write(b[:c.limit-c.written])
	c.written += int64(n)
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	// The reverse proxy answers a failed copy with http.ErrAbortHandler: the server then closes
	// the connection mid-body.
	return n, errCut
}

// Stats are the requests seen and the faults injected, e.g. "1234 requests, faults: cut 40, ...".
func (p *faultProxy) Stats() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	total := 0
	for _, k := range faultKinds {
		if n := p.faults[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
			total += n
		}
	}
	if total == 0 {
		return fmt.Sprintf("%d S3 requests", p.requests.Load())
	}
	return fmt.Sprintf("%d S3 requests, %d faults (%s)", p.requests.Load(), total, strings.Join(parts, ", "))
}

// Faults is the number of faults injected.
func (p *faultProxy) Faults() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, k := range p.faults {
		n += k
	}
	return n
}

// Duplicates is the number of object writes S3 acknowledged beyond the first for each object.
func (p *faultProxy) Duplicates() (dups, objects int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.writes {
		dups += n - 1
	}
	return dups, len(p.writes)
}

// TestFaultProxy checks each fault against a stand-in S3 (no local stack needed).
func TestFaultProxy(t *testing.T) {
	var stored sync.Map
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			stored.Store(r.URL.Path, b)
			w.Header().Set("ETag", `"x"`)
		case http.MethodGet:
			b, ok := stored.Load(r.URL.Path)
			if !ok {
				s3Error(w, http.StatusNotFound, "NoSuchKey", "no")
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(b.([]byte))))
			_, _ = w.Write(b.([]byte))
		}
	}))
	defer backend.Close()
	p := newFaultProxy(t, backend.URL, "bkt", nil)
	p.latency = [2]time.Duration{300 * time.Millisecond, 300 * time.Millisecond}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	body := bytes.Repeat([]byte("0123456789"), 1000)
	do := func(method, path string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(method, p.URL+path, bytes.NewReader(body))
		if method != http.MethodPut {
			req, _ = http.NewRequest(method, p.URL+path, nil)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	if resp, _, err := do(http.MethodPut, "/bkt/a"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("clean PUT: %v %v", resp, err)
	}
	only := func(k faultKind) { p.SetRates(faultRates{k: 1}) }

	only(faultSlowDown)
	if resp, b, err := do(http.MethodPut, "/bkt/b"); err != nil || resp.StatusCode != 503 || !bytes.Contains(b, []byte("<Code>SlowDown</Code>")) {
		t.Errorf("slowdown: %v %q %v", resp, b, err)
	}
	only(faultInternal)
	if resp, b, err := do(http.MethodGet, "/bkt/a"); err != nil || resp.StatusCode != 500 || !bytes.Contains(b, []byte("InternalError")) {
		t.Errorf("internal: %v %q %v", resp, b, err)
	}
	only(faultReset)
	if _, _, err := do(http.MethodGet, "/bkt/a"); err == nil {
		t.Error("reset: request succeeded")
	}
	only(faultLatency)
	start := time.Now()
	if resp, b, err := do(http.MethodGet, "/bkt/a"); err != nil || !bytes.Equal(b, body) || time.Since(start) < 300*time.Millisecond {
		t.Errorf("latency: %v %d bytes %v after %s", resp, len(b), err, time.Since(start))
	}
	only(faultCut)
	if _, b, err := do(http.MethodGet, "/bkt/a"); !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != len(body)/2 {
		t.Errorf("cut GET: %d of %d bytes, err %v; want half and an unexpected EOF", len(b), len(body), err)
	}
	if _, _, err := do(http.MethodPut, "/bkt/c"); err == nil {
		t.Error("cut PUT: the client heard back")
	}
	if _, ok := stored.Load("/bkt/c"); !ok {
		t.Error("cut PUT: never reached the backend")
	}
	if resp, _, err := do(http.MethodGet, "/bkt"); err != nil || resp.StatusCode == 0 { // bucket requests are exempt
		t.Errorf("bucket request broken: %v", err)
	}
	p.SetRates(nil)
	if resp, _, err := do(http.MethodPut, "/bkt/a"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("clean PUT: %v %v", resp, err)
	}
	dups, objects := p.Duplicates()
	if objects != 2 || dups != 1 { // a twice, c once (its answer was lost, the write was not)
		t.Errorf("writes: %d objects, %d duplicates; want 2 and 1", objects, dups)
	}
	faults := p.Stats()
	for _, k := range faultKinds {
		if !strings.Contains(faults, string(k)) {
			t.Errorf("stats %q lack %s", faults, k)
		}
	}
	keys := make([]string, 0)
	stored.Range(func(k, _ any) bool { keys = append(keys, k.(string)); return true })
	sort.Strings(keys)
	t.Logf("%s; backend holds %v", faults, keys)
}
