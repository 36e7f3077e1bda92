// Package console is `ferry console`: one page, served from the binary, that a person keeps open
// through a migration of weeks: each stage's backlog and rate with a chart of the last hour, the
// verified rate, the ETA, the producer's position and passes, the dead letters by reason with
// their keys to download, and the live throttle settings. It reads NATS only, as `ferry status`.
package console

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/deadletter"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/shared/telemetry"
	"github.com/ferry-migrate/ferry/tools/dlq"
	"github.com/ferry-migrate/ferry/tools/status"
)

//go:embed index.html
var page []byte

// History is how far back the chart goes, sampled every Every.
const (
	History = time.Hour
	Every   = 10 * time.Second
)

// Sample is one point of the chart.
type Sample struct {
	Time     time.Time         `json:"time"`
	Messages map[string]uint64 `json:"messages"`  // by stage: in its work queue
	Done     map[string]uint64 `json:"processed"` // by stage: left its work queue
	Verified uint64            `json:"verified"`
	Dead     uint64            `json:"dead"`
}

// View is what /api/status answers: the status as `ferry status --json` has it, the samples of
// the last hour and the throttle settings.
type View struct {
	Status   *status.Status      `json:"status"`
	History  []Sample            `json:"history"`
	Throttle map[string]Throttle `json:"throttle"`
}

// Throttle is a stage's live setting (`ferry throttle`) and how many processes share it.
type Throttle struct {
	Set  bool           `json:"set"`
	Live int            `json:"live_processes"`
	Is   limit.Throttle `json:"throttle"`
}

// Server serves the console of one job.
type Server struct {
	JS    jetstream.JetStream
	Names bus.Names
	Log   *slog.Logger

	mu      sync.Mutex
	history []Sample
	latest  *status.Status // the newest collected: open pages share it instead of each asking NATS
}

// fresh is how old a collected status may be and still answer a page: pages poll every 2 s, and
// many open ones should not each count DONE and the DLQ.
const fresh = 1500 * time.Millisecond

// collect returns a status no older than fresh.
func (s *Server) collect(ctx context.Context) (*status.Status, error) {
	s.mu.Lock()
	st := s.latest
	s.mu.Unlock()
	if st != nil && time.Since(st.Time) < fresh {
		return st, nil
	}
	st, err := status.Collect(ctx, s.JS, s.Names, time.Now())
	if err != nil {
		return nil, err
	}
	s.record(st)
	return st, nil
}

// Handler is the page and its API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /api/status", s.status)
	mux.HandleFunc("GET /api/dlq/keys.txt", s.keys)
	return mux
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.collect(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	v := View{Status: st, Throttle: map[string]Throttle{}}
	if kv, err := s.JS.KeyValue(r.Context(), s.Names.KV); err == nil {
		for _, stage := range []string{bus.StageFetcher, bus.StageUploader} {
			var t Throttle
			if e, err := kv.Get(r.Context(), limit.ThrottleKey(stage)); err == nil {
				t.Set = json.Unmarshal(e.Value(), &t.Is) == nil
			}
			t.Live, _ = limit.LiveProcesses(r.Context(), kv, stage)
			v.Throttle[stage] = t
		}
	}
	s.mu.Lock()
	v.History = append([]Sample(nil), s.history...)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// keys answers the dead letters of ?stage=&reason= as `ferry dlq export` writes them.
func (s *Server) keys(w http.ResponseWriter, r *http.Request) {
	f := deadletter.Filter{}
	if st := r.URL.Query().Get("stage"); st != "" {
		f.Stages = []string{st}
	}
	if re := r.URL.Query().Get("reason"); re != "" {
		f.Reasons = []string{re}
	}
	if err := f.Validate(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := strings.Trim(strings.Join(append(append([]string{"dlq"}, f.Stages...), f.Reasons...), "-"), "-")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.tsv"`)
	bw := bufio.NewWriter(w)
	esc := dlq.Escape
	if _, err := deadletter.Each(r.Context(), s.JS, s.Names, f, 0, func(e deadletter.Entry) error {
		_, err := fmt.Fprintf(bw, "%s\t%s\t%s\t%s\t%s\n", esc(e.Key), esc(e.Stage), esc(e.Reason), esc(e.Attempt), esc(e.Err))
		return err
	}); err != nil {
		s.Log.Warn("console: dlq export", "err", err) // the response has begun: cut short
	}
	_ = bw.Flush()
}

// record adds st to the history when Every has passed since the last sample.
func (s *Server) record(st *status.Status) {
	smp := Sample{Time: st.Time, Messages: map[string]uint64{}, Done: map[string]uint64{},
		Verified: st.Verified.Messages, Dead: st.DeadLetters.Total}
	for _, sg := range st.Stages {
		smp.Messages[sg.Stage], smp.Done[sg.Stage] = sg.Messages, sg.Processed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latest = st
	if n := len(s.history); n > 0 && smp.Time.Sub(s.history[n-1].Time) < Every {
		return
	}
	s.history = append(s.history, smp)
	for len(s.history) > 0 && smp.Time.Sub(s.history[0].Time) > History {
		s.history = s.history[1:]
	}
}

// sample records the status every Every until ctx ends, so that the chart covers the time no
// page was open.
func (s *Server) sample(ctx context.Context) {
	t := time.NewTicker(Every)
	defer t.Stop()
	for {
		if _, err := s.collect(ctx); err != nil && ctx.Err() == nil {
			s.Log.Debug("console: sample", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Command is `ferry console`.
func Command() *cli.Command {
	var listen string
	return &cli.Command{
		Name:  "console",
		Usage: "serve a live page of the job: backlog and rates with a chart of the last hour, ETA, producer, dead letters to download, throttle (reads NATS only)",
		Description: "The page is served from the binary and fetches nothing from elsewhere. It has no\n" +
			"authentication: keep it on loopback, or behind a proxy of your own.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", EnvVars: []string{"FERRY_CONSOLE_LISTEN"}, Destination: &listen, Usage: "address to serve the page on"},
		},
		Action: func(c *cli.Context) error {
			log, err := telemetry.NewLogger(c.String("log-level"), c.String("log-format"))
			if err != nil {
				return config.Invalid(err)
			}
			nc, js, n, err := service.ConnectExistingJob(c.Context, c, "console")
			if err != nil {
				return err
			}
			defer nc.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return config.Invalid(fmt.Errorf("--listen %s: %w", listen, err))
			}
			s := &Server{JS: js, Names: n, Log: log}
			srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
			ctx, cancel := context.WithCancel(c.Context)
			defer cancel()
			var wg sync.WaitGroup
			wg.Go(func() { s.sample(ctx) })
			wg.Go(func() {
				<-ctx.Done()
				sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer scancel()
				_ = srv.Shutdown(sctx)
			})
			fmt.Fprintf(c.App.ErrWriter, "ferry console of job %s: http://%s/\n", n.Job, ln.Addr())
			err = srv.Serve(ln)
			cancel()
			wg.Wait()
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		},
	}
}
