package blobstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/prometheus/client_golang/prometheus"
)

// Every client built by New records each S3 operation (SDK retries included) through a middleware:
// its latency and result, the object bytes it moved, and whether the endpoint answered at all. The
// state is per process, keyed by endpoint and bucket, so that the uploader and verifier need no
// wiring: service.Open registers Collectors with the process's registry (the job label is added
// there) and adds Ready as the "s3" readiness check.

var (
	requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ferry_s3_request_seconds",
		Help: "S3 operations (SDK retries included) by operation (PutObject, HeadObject, GetObject, UploadPart, …) and result (ok, not_found, precondition_failed, throttled, client_error, server_error, network_error, timeout, canceled).",
		// 1 ms to ~65 s: a HEAD is milliseconds, a large part PUT seconds, and the request timeout
		// (60 s by default) ends it.
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
	}, []string{"operation", "result"})
	bytesMoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_s3_bytes_total",
		Help: "Object bytes sent (PutObject, UploadPart) or received (GetObject, GetObject ranges) by successful S3 operations.",
	}, []string{"operation"})

	endpointsMu sync.Mutex
	endpoints   = map[string]*endpointState{}
)

// Collectors are this package's metrics, for a process registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{requestSeconds, bytesMoved}
}

// endpointState is what the clients of one endpoint and bucket observed last.
type endpointState struct {
	name      string // "bucket ferry-demo at http://127.0.0.1:7070"
	mu        sync.Mutex
	lastOK    time.Time // last operation that got an HTTP answer (any status)
	lastErrAt time.Time // last operation that got none: refused, reset, DNS, timeout
	lastErr   error
}

func stateOf(endpoint, bucket string) *endpointState {
	name := "bucket " + bucket
	if endpoint != "" {
		name += " at " + endpoint
	}
	endpointsMu.Lock()
	defer endpointsMu.Unlock()
	st, ok := endpoints[name]
	if !ok {
		st = &endpointState{name: name}
		endpoints[name] = st
	}
	return st
}

func (st *endpointState) check() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lastErr != nil && st.lastErrAt.After(st.lastOK) {
		return fmt.Errorf("%s: last request %s ago got no answer: %v", st.name,
			time.Since(st.lastErrAt).Round(time.Second), st.lastErr)
	}
	return nil
}

// Ready is nil unless the last S3 operation on some endpoint and bucket used in this process got
// no answer at all (connection refused or reset, DNS, timeout) and none has been answered since.
// An error answer (403, 404, 503) is an answer: the endpoint is reachable.
func Ready() error {
	endpointsMu.Lock()
	all := make([]*endpointState, 0, len(endpoints))
	for _, st := range endpoints {
		all = append(all, st)
	}
	endpointsMu.Unlock()
	slices.SortFunc(all, func(a, b *endpointState) int { return strings.Compare(a.name, b.name) })
	var errs []error
	for _, st := range all {
		if err := st.check(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// instrument is the s3.Options API option that adds the middleware, first in the Initialize
// step so it times the whole operation, SDK retries included.
func (st *endpointState) instrument(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("ferry/metrics",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			start := time.Now()
			out, md, err := next.HandleInitialize(ctx, in)
			st.observe(middleware.GetOperationName(ctx), in.Parameters, out.Result, err, start)
			return out, md, err
		}), middleware.Before)
}

func (st *endpointState) observe(op string, params, result any, err error, start time.Time) {
	res := requestResult(err)
	requestSeconds.WithLabelValues(op, res).Observe(time.Since(start).Seconds())
	switch res {
	case "network_error", "timeout":
		st.mu.Lock()
		st.lastErr, st.lastErrAt = err, time.Now()
		st.mu.Unlock()
	case "canceled":
	default:
		st.mu.Lock()
		st.lastOK = time.Now()
		st.mu.Unlock()
	}
	if err != nil {
		return
	}
	var n int64
	switch p := params.(type) {
	case *s3.PutObjectInput:
		n = aws.ToInt64(p.ContentLength)
	case *s3.UploadPartInput:
		n = aws.ToInt64(p.ContentLength)
	}
	if o, ok := result.(*s3.GetObjectOutput); ok {
		n = aws.ToInt64(o.ContentLength)
	}
	if n > 0 {
		bytesMoved.WithLabelValues(op).Add(float64(n))
	}
}

func requestResult(err error) string {
	if err == nil {
		return "ok"
	}
	switch s := statusOf(err); {
	case s == http.StatusNotFound:
		return "not_found"
	case s == http.StatusPreconditionFailed:
		return "precondition_failed"
	case s == http.StatusTooManyRequests || s == http.StatusServiceUnavailable || isCode(err, "SlowDown"):
		return "throttled"
	case s >= 500:
		return "server_error"
	case s >= 400:
		return "client_error"
	case s > 0:
		return "error"
	}
	var send *smithyhttp.RequestSendError
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &send):
		return "network_error"
	}
	return "error"
}
