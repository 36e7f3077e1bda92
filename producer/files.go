package producer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/keylist"
)

// Checkpoint is a key list's position, stored in the job's KV under producer.<digest of the name>.
type Checkpoint struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"` // bytes of the (decompressed) list whose keys are durably in KEYS
	Line   int64  `json:"line"`
	Done   bool   `json:"done"`
}

// checkpointLines bounds how far a checkpoint trails: a killed producer re-sends at most this many
// lines (plus those in flight), which the broker's duplicate window drops.
const checkpointLines = 10_000

// checkpointKey is the KV key of a key list's checkpoint: absolute paths and s3:// URLs name a
// list the same way from any working directory.
func checkpointKey(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "producer." + hex.EncodeToString(sum[:12])
}

// listName is how a list is named in its checkpoint: an absolute path, an s3:// URL or "-".
func listName(name string) string {
	if _, _, ok := keylist.ParseS3(name); ok || name == keylist.Stdin {
		return name
	}
	if abs, err := filepath.Abs(name); err == nil {
		return abs
	}
	return name
}

// fileProgress is what the progress line knows of the key lists: bytes read of how many.
type fileProgress struct {
	files, finished atomic.Int64
	size, consumed  atomic.Int64 // underlying bytes (compressed, if a list is) of the lists opened
	startConsumed   atomic.Int64 // bytes skipped by resuming, not read in this run
}

// runFiles publishes the key lists, cfg.Parallel at a time, each with its own checkpoint. The
// first error stops the others, which save their checkpoints first.
func (s *sink) runFiles(ctx context.Context, names []string, s3 keylist.Getter, p *tracker) error {
	fp := &fileProgress{}
	fp.files.Store(int64(len(names)))
	for _, n := range names { // local sizes now, for an ETA from the start; S3 objects' on opening
		if fi, err := os.Stat(n); err == nil && fi.Mode().IsRegular() {
			fp.size.Add(fi.Size())
		}
	}
	p.files.Store(fp)
	return each(ctx, s.cfg.Parallel, names, func(ctx context.Context, name string) error {
		if err := s.file(ctx, name, s3, fp); err != nil {
			return err
		}
		fp.finished.Add(1)
		return nil
	})
}

// listReader publishes one key list.
type listReader struct {
	s          *sink
	w          window
	cp         Checkpoint
	cpKey      string // empty for stdin: not checkpointed
	lastSave   time.Time
	savedLines int64
}

func (s *sink) file(ctx context.Context, name string, s3 keylist.Getter, fp *fileProgress) error {
	lr := &listReader{s: s, w: window{s: s}, cp: Checkpoint{Path: name}}
	if name != keylist.Stdin {
		lr.cpKey = checkpointKey(listName(name))
		lr.cp.Path = listName(name)
		if !s.cfg.Restart {
			if e, err := s.kv.Get(ctx, lr.cpKey); err == nil {
				if err := json.Unmarshal(e.Value(), &lr.cp); err != nil {
					return fmt.Errorf("producer: checkpoint %s of %s: %w", lr.cpKey, lr.cp.Path, err)
				}
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("producer: read checkpoint of %s: %w", lr.cp.Path, err)
			}
		}
		if lr.cp.Done {
			s.skipped.Add(1)
			s.env.Log.Info("key list already published; --restart to publish it again", "file", lr.cp.Path, "lines", lr.cp.Line)
			return nil
		}
	}
	list, err := keylist.Open(ctx, name, lr.cp.Offset, s3)
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	defer list.Close()
	if lr.cp.Offset > 0 {
		s.env.Log.Info("resuming key list from checkpoint", "file", lr.cp.Path, "line", lr.cp.Line, "offset", lr.cp.Offset)
	}
	if _, _, ok := keylist.ParseS3(name); ok && list.Size() > 0 {
		fp.size.Add(list.Size())
	}
	before := list.Consumed()
	fp.consumed.Add(before)
	fp.startConsumed.Add(before)
	counted := &consumedCounter{list: list, fp: fp, last: before}
	lr.w.done = position{at: lr.cp.Offset, n: lr.cp.Line}
	err = lr.lines(ctx, bufio.NewReaderSize(counted, 64<<10), lr.cp.Path)
	// Whatever happened, confirm what is outstanding and save how far that got; bounded, so a
	// producer stopped while NATS is down still exits (its checkpoint only trails, dedupe covers it).
	// A stopping producer waits one ack timeout for PubAcks already on their way, no more.
	wait := 30 * time.Second
	if ctx.Err() != nil {
		wait = s.ackTimeout
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait)
	defer cancel()
	werr := lr.w.drain(dctx)
	if err == nil && werr == nil && ctx.Err() == nil {
		lr.cp.Done = true
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if serr := lr.save(sctx); serr != nil && err == nil {
		err = serr
	}
	return errors.Join(err, werr)
}

// consumedCounter passes a list's reads through and publishes how far into the underlying file
// they have got.
type consumedCounter struct {
	list *keylist.List
	fp   *fileProgress
	last int64
}

func (c *consumedCounter) Read(p []byte) (int, error) {
	n, err := c.list.Read(p)
	now := c.list.Consumed()
	c.fp.consumed.Add(now - c.last)
	c.last = now
	return n, err
}

// lines reads one key a line; a line longer than the buffer is read whole but dead-lettered.
func (lr *listReader) lines(ctx context.Context, br *bufio.Reader, name string) error {
	s := lr.s
	line, offset := lr.cp.Line, lr.cp.Offset
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
		s.lines.Add(1)
		key := keylist.Key(raw, offset == n)
		origin := name + ":" + strconv.FormatInt(line, 10)
		switch {
		case len(key) == 0 && !long:
			s.blank.Add(1)
		case long:
			if err := s.deadLetter(ctx, key, origin, "line longer than 64 KiB"); err != nil {
				return err
			}
		default:
			if err := s.key(ctx, &lr.w, key, origin, position{at: offset, n: line}); err != nil {
				return err
			}
		}
		if err != nil { // EOF without a final newline
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("producer: read %s after line %d: %w", name, line, err)
		}
		if err := lr.tick(ctx, line); err != nil {
			return err
		}
	}
	return nil
}

// tick saves the checkpoint and applies backpressure, about once a second or every
// checkpointLines lines.
func (lr *listReader) tick(ctx context.Context, line int64) error {
	if time.Since(lr.lastSave) < time.Second && line-lr.savedLines < checkpointLines {
		return nil
	}
	if err := lr.w.drain(ctx); err != nil {
		return err
	}
	if err := lr.save(ctx); err != nil {
		return err
	}
	lr.s.gate.wait(ctx)
	return nil
}

func (lr *listReader) save(ctx context.Context) error {
	lr.cp.Offset, lr.cp.Line = lr.w.done.at, lr.w.done.n
	lr.lastSave, lr.savedLines = time.Now(), lr.cp.Line
	if lr.cpKey == "" {
		return nil
	}
	b, _ := json.Marshal(lr.cp)
	return lr.s.putCheckpoint(ctx, lr.cpKey, b)
}
