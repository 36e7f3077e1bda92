// Package telemetry sets up ferry's logs (log/slog) and serves its Prometheus metrics and health
// endpoints (/healthz, /readyz) on one address and the Go profiler (net/http/pprof) on another.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewLogger returns a logger writing to stderr at level ("debug", "info", "warn", "error") in
// format ("text" or "json").
func NewLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// NewRegistry is a registry with the Go and process collectors; one per process, passed down
// (no global registry).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve exposes /metrics, /healthz (live) and /readyz (checks) on addr until stop is called, so
// any service can be watched and probed in place; nothing else (the profiler has its own address,
// ServePprof). An empty addr serves nothing. Once ctx ends (the shutdown signal) /readyz answers
// 503 "shutting down", but the server keeps answering until stop: a service draining its
// in-flight work stays scrapeable and live.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, checks *Checks, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/healthz", Live())
	mux.Handle("/readyz", Ready(ctx, checks))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	log.Info("metrics", "addr", ln.Addr().String())
	return serve(srv, ln, "metrics server", log), nil
}

// serve runs srv on ln; stop shuts it down, once, waiting up to 2 s for requests under way.
func serve(srv *http.Server, ln net.Listener, what string, log *slog.Logger) (stop func()) {
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(what, "err", err)
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if srv.Shutdown(sctx) != nil {
				_ = srv.Close() // a profile still being taken
			}
		})
	}
}

// MaxProfileSeconds caps the seconds= of a CPU profile, a trace and a delta profile
// (heap?seconds=…): a longer one is refused with 400, so that nobody holds the profiler (one CPU
// profile at a time) or a connection for hours.
const MaxProfileSeconds = 60

// ServePprof serves the Go profiler (net/http/pprof) under /debug/pprof/ on addr until stop is
// called (`go tool pprof http://addr/debug/pprof/profile?seconds=30`); an empty addr serves
// nothing. It shows goroutine stacks, the heap and the command line to anyone who reaches it, so
// it is off by default, meant for loopback (kubectl port-forward), and an address that is not
// loopback gets one warning at start.
func ServePprof(addr string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	stop, _, err = servePprof(addr, log)
	return stop, err
}

func servePprof(addr string, log *slog.Logger) (stop func(), bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("--pprof-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	// The pprof package's init also registers these on http.DefaultServeMux, which ferry never
	// serves; only this mux exposes them. Index also serves the named profiles (heap, goroutine,
	// allocs, block, mutex, threadcreate).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// WriteTimeout past the longest profile: pprof itself also refuses a profile that would
	// outlast it.
	srv := &http.Server{Handler: capSeconds(mux), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: (MaxProfileSeconds + 15) * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	bound = ln.Addr().String()
	if !loopback(addr) {
		log.Warn("pprof serves goroutine stacks, the heap and the command line to anyone who can reach this address: bind --pprof-addr to 127.0.0.1 and use kubectl port-forward, unless it is deliberate", "addr", bound)
	} else {
		log.Info("pprof", "addr", bound)
	}
	return serve(srv, ln, "pprof server", log), bound, nil
}

// capSeconds refuses a seconds= that is not a number of seconds from 0 to MaxProfileSeconds.
func capSeconds(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("seconds"); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 || n > MaxProfileSeconds {
				http.Error(w, fmt.Sprintf("seconds=%.20q: want a whole number of seconds, at most %d", v, MaxProfileSeconds), http.StatusBadRequest)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// loopback: addr's host is a loopback address or localhost (an empty host listens on every
// interface).
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
