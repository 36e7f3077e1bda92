// Package producer reads key lists and publishes each key to the job's KEYS stream, checkpointing
// each file's position in the job's KV bucket once the publishes before it are acknowledged, and
// holding back while the KEYS backlog is above a high-water mark.
package producer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/service"
)

// Config is the producer's flags.
type Config struct {
	Keys      cli.StringSlice
	InFlight  int   // async publishes awaiting their PubAck
	HighWater int64 // KEYS messages above which the producer waits
	Restart   bool  // ignore checkpoints
	Progress  bool  // a progress line on stderr
	Settings  bus.Settings
}

// Flags are the producer's flags.
func (c *Config) Flags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringSliceFlag{Name: "keys", Aliases: []string{"k"}, EnvVars: []string{"FERRY_KEYS"}, Destination: &c.Keys, Usage: "key list file(s), one key a line; - for stdin (not checkpointed)"},
		&cli.IntFlag{Name: "in-flight", Value: 1024, EnvVars: []string{"FERRY_PRODUCER_IN_FLIGHT"}, Destination: &c.InFlight, Usage: "publishes awaiting acknowledgement"},
		&cli.Int64Flag{Name: "high-water", Value: 1_000_000, EnvVars: []string{"FERRY_PRODUCER_HIGH_WATER"}, Destination: &c.HighWater, Usage: "wait while the KEYS backlog holds more messages than this"},
		&cli.BoolFlag{Name: "restart", EnvVars: []string{"FERRY_PRODUCER_RESTART"}, Destination: &c.Restart, Usage: "ignore checkpoints and publish every file from its start"},
		&cli.BoolFlag{Name: "progress", Value: true, EnvVars: []string{"FERRY_PROGRESS"}, Destination: &c.Progress, Usage: "print a progress line on stderr when it is a terminal"},
	}, c.Settings.Flags()...)
}

// Validate checks the flags.
func (c *Config) Validate() error {
	if len(c.Keys.Value()) == 0 {
		return config.Invalid(errors.New("--keys: give at least one key list file (or - for stdin)"))
	}
	if c.InFlight < 1 || c.InFlight > 4000 {
		return config.Invalid(fmt.Errorf("--in-flight %d: must be 1..4000 (the client stalls beyond)", c.InFlight))
	}
	if c.HighWater < 1 {
		return config.Invalid(fmt.Errorf("--high-water %d: must be at least 1", c.HighWater))
	}
	return nil
}

// Command is `ferry producer`.
func Command() *cli.Command {
	var cfg Config
	return &cli.Command{
		Name:  "producer",
		Usage: "publish keys from key lists to the KEYS stream, resuming from checkpoints",
		Flags: cfg.Flags(),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			env, err := service.Open(c.Context, c, service.Options{Name: bus.StageProducer, Settings: cfg.Settings})
			if err != nil {
				return err
			}
			defer env.Close()
			st, err := Run(c.Context, env, cfg)
			env.Log.Info("producer finished", "published", st.Published, "duplicates", st.Duplicates,
				"invalid", st.Invalid, "blank", st.Blank, "skipped_files", st.SkippedFiles)
			return err
		},
	}
}

// Stats count what a run did.
type Stats struct {
	Lines, Published, Duplicates, Invalid, Blank, SkippedFiles int64
}

// Checkpoint is a file's position, stored in the job's KV under producer.<digest of the path>.
type Checkpoint struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"` // bytes of the file whose keys are durably in KEYS
	Line   int64  `json:"line"`
	Done   bool   `json:"done"`
}

// Run publishes every file of cfg.Keys in turn. It returns when all are published or ctx ends; on
// ctx end it waits for outstanding acks and saves the checkpoint, so a restart resumes exactly.
func Run(ctx context.Context, env *service.Env, cfg Config) (Stats, error) {
	kv, err := env.JS.KeyValue(ctx, env.Names.KV)
	if err != nil {
		return Stats{}, fmt.Errorf("producer: kv %s: %w", env.Names.KV, err)
	}
	p := &publisher{env: env, cfg: cfg, kv: kv, start: time.Now()}
	for _, f := range cfg.Keys.Value() {
		if err := p.file(ctx, f); err != nil {
			return p.st, err
		}
		if ctx.Err() != nil {
			return p.st, nil
		}
	}
	p.progressLine(true)
	return p.st, nil
}

type pending struct {
	fut    jetstream.PubAckFuture
	offset int64 // file offset after this line
	line   int64
}

type publisher struct {
	env   *service.Env
	cfg   Config
	kv    jetstream.KeyValue
	st    Stats
	start time.Time

	window   []pending
	cp       Checkpoint
	cpKey    string
	lastSave time.Time
	lastProg time.Time
	// ETA of the current file: its size, the offset read, where this run began, lines read since.
	size, read, base, fileLines int64
	savedLines                  int64 // fileLines at the last checkpoint
}

func (p *publisher) file(ctx context.Context, name string) error {
	var r io.Reader
	p.cp, p.cpKey, p.size = Checkpoint{Path: name}, "", 0
	if name == "-" {
		r = os.Stdin
	} else {
		abs, err := filepath.Abs(name)
		if err != nil {
			return fmt.Errorf("producer: %s: %w", name, err)
		}
		f, err := os.Open(abs)
		if err != nil {
			return fmt.Errorf("producer: open key list: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			p.size = fi.Size()
		}
		sum := sha256.Sum256([]byte(abs))
		p.cpKey = "producer." + hex.EncodeToString(sum[:12])
		p.cp.Path = abs
		if !p.cfg.Restart {
			if e, err := p.kv.Get(ctx, p.cpKey); err == nil {
				if err := json.Unmarshal(e.Value(), &p.cp); err != nil {
					return fmt.Errorf("producer: checkpoint %s of %s: %w", p.cpKey, abs, err)
				}
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("producer: read checkpoint of %s: %w", abs, err)
			}
		}
		if p.cp.Done {
			p.st.SkippedFiles++
			p.env.Log.Info("key list already published; --restart to publish it again", "file", abs, "lines", p.cp.Line)
			return nil
		}
		if p.cp.Offset > 0 {
			if _, err := f.Seek(p.cp.Offset, io.SeekStart); err != nil {
				return fmt.Errorf("producer: resume %s at byte %d: %w", abs, p.cp.Offset, err)
			}
			p.env.Log.Info("resuming key list from checkpoint", "file", abs, "line", p.cp.Line, "offset", p.cp.Offset)
		}
		p.read, p.base, p.fileLines, p.savedLines = p.cp.Offset, p.cp.Offset, 0, 0
		r = f
	}
	err := p.lines(ctx, bufio.NewReaderSize(r, 64<<10), p.cp.Path)
	// Whatever happened, confirm what is outstanding and save how far that got; bounded, so a
	// producer stopped while NATS is down still exits (its checkpoint only trails, dedupe covers it).
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	werr := p.drain(fctx)
	if err == nil && werr == nil && ctx.Err() == nil {
		p.cp.Done = true
	}
	if serr := p.save(fctx); serr != nil && err == nil {
		err = serr
	}
	return errors.Join(err, werr)
}

// lines reads one key a line; a line longer than the buffer is read whole but dead-lettered.
func (p *publisher) lines(ctx context.Context, br *bufio.Reader, name string) error {
	line, offset := p.cp.Line, p.cp.Offset
	maxKey := 1024
	for ctx.Err() == nil {
		raw, err := br.ReadSlice('\n')
		n := int64(len(raw))
		long := false
		for errors.Is(err, bufio.ErrBufferFull) { // keep the start, skip the rest of the line
			long = true
			var more []byte
			more, err = br.ReadSlice('\n')
			n += int64(len(more))
		}
		if n == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("producer: read %s after line %d: %w", name, line, err)
		}
		line++
		offset += n
		p.read = offset
		p.st.Lines++
		p.fileLines++
		key := bytes.TrimSpace(raw)
		if offset == n { // the file's first line: a UTF-8 byte order mark is not part of the key
			key = bytes.TrimSpace(bytes.TrimPrefix(key, []byte("\xef\xbb\xbf")))
		}
		origin := name + ":" + strconv.FormatInt(line, 10)
		switch {
		case len(key) == 0 && !long:
			p.st.Blank++
		case long || keyrules.CheckSource(key, maxKey) != nil:
			cause := "line longer than 64 KiB"
			if !long {
				cause = keyrules.CheckSource(key, maxKey).Error()
			}
			if err := p.invalid(ctx, key, origin, cause); err != nil {
				return err
			}
		default:
			if err := p.publish(ctx, key, origin, offset, line); err != nil {
				return err
			}
		}
		if err != nil { // EOF without a final newline
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("producer: read %s after line %d: %w", name, line, err)
		}
		if err := p.tick(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (p *publisher) publish(ctx context.Context, key []byte, origin string, offset, line int64) error {
	if len(p.window) >= p.cfg.InFlight {
		if err := p.confirm(ctx, len(p.window)/2); err != nil {
			return err
		}
	}
	m := bus.KeyMsg(p.env.Names, string(key), bus.KeyID(p.env.Names.Job, string(key)), origin)
	fut, err := p.env.JS.PublishMsgAsync(m, jetstream.WithMsgID(bus.MsgID("keys", m.Header.Get(bus.HdrID))))
	if err != nil {
		return fmt.Errorf("producer: publish key %q (%s): %w", key, origin, err)
	}
	p.window = append(p.window, pending{fut: fut, offset: offset, line: line})
	return nil
}

// confirm waits for the oldest n publishes, re-publishing (same Nats-Msg-Id) any that failed, and
// advances the checkpoint past them.
func (p *publisher) confirm(ctx context.Context, n int) error {
	for i := 0; i < n && len(p.window) > 0; i++ {
		pd := p.window[0]
		select {
		case ack := <-pd.fut.Ok():
			if ack.Duplicate {
				p.st.Duplicates++
			} else {
				p.st.Published++
			}
		case err := <-pd.fut.Err():
			ack, err := p.retry(ctx, pd.fut.Msg(), err)
			if err != nil {
				return err
			}
			if ack.Duplicate {
				p.st.Duplicates++
			} else {
				p.st.Published++
			}
		}
		p.window = p.window[1:]
		p.cp.Offset, p.cp.Line = pd.offset, pd.line
	}
	return nil
}

// retry publishes m synchronously until it is stored; the Nats-Msg-Id makes a repeat harmless.
func (p *publisher) retry(ctx context.Context, m *nats.Msg, cause error) (*jetstream.PubAck, error) {
	for attempt := 1; ; attempt++ {
		p.env.Log.Debug("publish failed, retrying", "key", string(m.Data), "attempt", attempt, "err", cause)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("producer: publish key %q: %w (last error: %v)", m.Data, ctx.Err(), cause)
		case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)):
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ack, err := p.env.JS.PublishMsg(pctx, m, jetstream.WithMsgID(m.Header.Get(nats.MsgIdHdr)))
		cancel()
		if err == nil {
			return ack, nil
		}
		cause = err
	}
}

func (p *publisher) drain(ctx context.Context) error {
	return p.confirm(ctx, len(p.window))
}

func (p *publisher) invalid(ctx context.Context, key []byte, origin, cause string) error {
	h := nats.Header{}
	h.Set(bus.HdrOrigin, origin)
	if err := bus.PublishDeadLetter(ctx, p.env.JS, p.env.Names, bus.DeadLetter{
		Key: string(key), Stage: bus.StageProducer, Reason: bus.ReasonInvalidKey, Err: cause, From: h,
	}); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	p.st.Invalid++
	return nil
}

// checkpointLines bounds how far a checkpoint trails: a killed producer re-sends at most this many
// lines (plus those in flight), which the broker's duplicate window drops.
const checkpointLines = 10_000

// tick saves the checkpoint, prints progress and applies backpressure, about once a second or
// every checkpointLines lines.
func (p *publisher) tick(ctx context.Context) error {
	if time.Since(p.lastSave) < time.Second && p.fileLines-p.savedLines < checkpointLines {
		return nil
	}
	if err := p.drain(ctx); err != nil {
		return err
	}
	if err := p.save(ctx); err != nil {
		return err
	}
	p.progressLine(false)
	return p.holdBack(ctx)
}

func (p *publisher) save(ctx context.Context) error {
	p.lastSave, p.savedLines = time.Now(), p.fileLines
	if p.cpKey == "" {
		return nil
	}
	b, _ := json.Marshal(p.cp)
	return p.retrying(ctx, "save checkpoint", func(ctx context.Context) error {
		_, err := p.kv.Put(ctx, p.cpKey, b)
		return err
	})
}

// retrying calls op until it succeeds or ctx ends: a NATS restart or leader election must pause
// the producer, not end it (the checkpoint would fall behind and a person would have to restart it).
func (p *publisher) retrying(ctx context.Context, what string, op func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := op(octx)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == 1 || attempt%10 == 0 {
			p.env.Log.Warn("producer: "+what+" failed, retrying", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("producer: %s of %s at line %d: %w (last error: %v)", what, p.cp.Path, p.cp.Line, ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)):
		}
	}
}

// holdBack waits while the KEYS backlog is above the high-water mark, until it falls to 90% of it.
func (p *publisher) holdBack(ctx context.Context) error {
	limit := uint64(p.cfg.HighWater)
	for waited := false; ; waited = true {
		var backlog uint64
		err := p.retrying(ctx, "read the KEYS backlog", func(ctx context.Context) error {
			s, err := p.env.JS.Stream(ctx, p.env.Names.Keys)
			if err != nil {
				return err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err
			}
			backlog = info.State.Msgs
			return nil
		})
		if err != nil {
			return nil // ctx ended: the caller stops
		}
		if backlog <= limit {
			if waited {
				p.env.Log.Info("KEYS backlog below high-water mark, resuming", "backlog", backlog)
			}
			return nil
		}
		if !waited {
			p.env.Log.Info("KEYS backlog above high-water mark, holding back", "backlog", backlog, "high_water", p.cfg.HighWater)
			limit = uint64(p.cfg.HighWater) * 9 / 10
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (p *publisher) progressLine(final bool) {
	if !p.cfg.Progress {
		return
	}
	el := time.Since(p.start).Seconds()
	rate := float64(p.st.Published+p.st.Duplicates) / max(el, 0.001)
	eta := "?"
	if p.size > 0 && p.read <= p.size && p.fileLines > 0 {
		bytesPerLine := float64(p.read-p.base) / float64(p.fileLines)
		if bytesPerLine > 0 && rate > 0 {
			eta = (time.Duration(float64(p.size-p.read)/bytesPerLine/rate) * time.Second).Round(time.Second).String()
		}
	}
	line := fmt.Sprintf("producer: lines %d, published %d, duplicates %d, invalid %d, %.0f keys/s, ETA %s",
		p.st.Lines, p.st.Published, p.st.Duplicates, p.st.Invalid, rate, eta)
	if isTerminal(os.Stderr) {
		end := ""
		if final {
			end = "\n"
		}
		fmt.Fprintf(os.Stderr, "\r%s\033[K%s", line, end)
	} else if final || time.Since(p.lastProg) >= 10*time.Second {
		slog.Info(line)
		p.lastProg = time.Now()
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
