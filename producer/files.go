package producer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/keylist"
)

// checkpointLines bounds how far a checkpoint trails: a killed producer re-sends at most this many
// lines (plus those in flight), which the broker's duplicate window drops.
const checkpointLines = 10_000

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
	s     *sink
	w     window
	cp    checkpoint.List
	cpKey string // empty for stdin: not checkpointed
	id    keylist.Identity
	// at is the position after the last line handled: its key published (perhaps not yet
	// acknowledged) or dead-lettered, or it was blank. h is the SHA-256 of the bytes read so far,
	// hashed of them; they differ from at only when a line was read but not handled.
	at         position
	h          hash.Hash
	hashed     int64
	partial    bool // the list is resumed after a last line that had no newline
	lastSave   time.Time
	savedLines int64
}

func (s *sink) file(ctx context.Context, name string, s3 keylist.Getter, fp *fileProgress) error {
	lr := &listReader{s: s, w: window{s: s}, cp: checkpoint.List{Path: name}, h: sha256.New()}
	var list *keylist.List
	var err error
	if name == keylist.Stdin {
		list, err = keylist.Open(ctx, name, 0, s3)
		if err != nil {
			return fmt.Errorf("producer: %w", err)
		}
	} else {
		if list, err = lr.open(ctx, name, s3); err != nil {
			return err
		}
		if list == nil {
			s.skipped.Add(1)
			return nil
		}
	}
	defer list.Close()
	lr.id = list.Identity()
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
	br := bufio.NewReaderSize(counted, 64<<10)
	if _, err := br.Peek(1); err == nil && lr.partial {
		// The list's last line, published as a key, had no newline, and the list goes on after
		// it: that line is now another key.
		return lr.changed()
	}
	lr.at = position{at: lr.cp.Offset, n: lr.cp.Line}
	lr.hashed = lr.cp.Offset
	lr.w.done = lr.at
	err = lr.lines(ctx, br, lr.cp.Path)
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
	if werr != nil || lr.hashed != lr.at.at {
		// Keys read are unacknowledged, or a line was read but not handled: the last checkpoint
		// saved stays, behind them.
		return errors.Join(err, werr)
	}
	if err == nil && ctx.Err() == nil {
		lr.cp.Done = true
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if serr := lr.save(sctx); serr != nil && err == nil {
		err = serr
	}
	return err
}

// open reads a list's checkpoint and opens the list where it says to resume, once the list is
// known to be the one the checkpoint was saved for, or to begin with it; nil when the list is
// published and unchanged.
func (lr *listReader) open(ctx context.Context, name string, s3 keylist.Getter) (*keylist.List, error) {
	s := lr.s
	lr.cpKey = checkpoint.ListKey(listName(name))
	lr.cp.Path = listName(name)
	if !s.cfg.Restart {
		if e, err := s.kv.Get(ctx, lr.cpKey); err == nil {
			if err := json.Unmarshal(e.Value(), &lr.cp); err != nil {
				return nil, fmt.Errorf("producer: checkpoint %s of %s: %w", lr.cpKey, lr.cp.Path, err)
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("producer: read checkpoint of %s: %w", lr.cp.Path, err)
		}
	}
	cp := lr.cp
	switch {
	case cp.SHA256 == "" && (cp.Offset > 0 || cp.Done):
		s.oldCheckpoints.Do(func() {
			s.env.Log.Warn("producer: checkpoints saved by an older ferry have no list identity: those lists are resumed by offset, unchecked, and saved with their identity from now on",
				"file", cp.Path)
		})
		if cp.Done {
			s.env.Log.Info("key list already published; --restart to publish it again", "file", cp.Path, "lines", cp.Line)
			return nil, nil
		}
		// The bytes before the offset are read again, so that the next checkpoint has their hash.
		l, err := keylist.OpenVerify(ctx, name, cp.Offset, lr.h, s3)
		if err != nil {
			return nil, fmt.Errorf("producer: %w", err)
		}
		return l, nil
	case cp.SHA256 == "":
		l, err := keylist.Open(ctx, name, 0, s3)
		if err != nil {
			return nil, fmt.Errorf("producer: %w", err)
		}
		return l, nil
	case cp.Done:
		id, err := keylist.Stat(ctx, name, s3)
		if err != nil {
			return nil, fmt.Errorf("producer: %w", err)
		}
		if cp.Identity.Same(id) {
			s.env.Log.Info("key list already published; --restart to publish it again", "file", cp.Path, "lines", cp.Line)
			return nil, nil
		}
		return lr.openChanged(ctx, name, s3)
	}
	l, err := keylist.Open(ctx, name, cp.Offset, s3)
	if err == nil && cp.Identity.Same(l.Identity()) && lr.restoreHash() {
		return l, nil
	}
	if err == nil {
		l.Close()
	} else if !errors.Is(err, keylist.ErrShort) {
		return nil, fmt.Errorf("producer: %w", err)
	}
	return lr.openChanged(ctx, name, s3)
}

// openChanged opens a list whose identity is not the one its checkpoint was saved with, reading
// its bytes before the checkpoint again: it is resumed when they hash the same (the list grew, or
// was rewritten or touched) and refused when they do not.
func (lr *listReader) openChanged(ctx context.Context, name string, s3 keylist.Getter) (*keylist.List, error) {
	cp := lr.cp
	lr.h = sha256.New()
	last := &lastByte{w: lr.h}
	l, err := keylist.OpenVerify(ctx, name, cp.Offset, last, s3)
	if errors.Is(err, keylist.ErrShort) {
		return nil, lr.changed()
	}
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	if hex.EncodeToString(lr.h.Sum(nil)) != cp.SHA256 {
		l.Close()
		return nil, lr.changed()
	}
	lr.partial = cp.Offset > 0 && last.b != '\n'
	if cp.Done {
		lr.cp.Done = false
		lr.s.env.Log.Info("key list changed since it was published, its published lines did not: publishing any after them",
			"file", cp.Path, "line", cp.Line)
	}
	return l, nil
}

// changed is the error of a list whose published part changed since its checkpoint.
func (lr *listReader) changed() error {
	return fmt.Errorf("producer: key list %s changed since its checkpoint: its first %d lines (%d bytes), already published, are not the same any more; to publish it from its start, run with --restart",
		lr.cp.Path, lr.cp.Line, lr.cp.Offset)
}

// restoreHash takes up the checkpoint's hash of the bytes before its offset.
func (lr *listReader) restoreHash() bool {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(lr.cp.HashState); err != nil ||
		hex.EncodeToString(h.Sum(nil)) != lr.cp.SHA256 {
		return false
	}
	lr.h = h
	return true
}

// lastByte passes writes through to w and remembers the last byte written.
type lastByte struct {
	w io.Writer
	b byte
}

func (l *lastByte) Write(p []byte) (int, error) {
	if len(p) > 0 {
		l.b = p[len(p)-1]
	}
	return l.w.Write(p)
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
	line, offset := lr.at.n, lr.at.at
	for ctx.Err() == nil {
		raw, err := br.ReadSlice('\n')
		lr.hash(raw)
		n := int64(len(raw))
		long := false
		if errors.Is(err, bufio.ErrBufferFull) { // keep the start, skip the rest of the line
			long = true
			raw = bytes.Clone(raw) // the reads that skip the rest reuse the buffer
		}
		for errors.Is(err, bufio.ErrBufferFull) {
			var more []byte
			more, err = br.ReadSlice('\n')
			lr.hash(more)
			n += int64(len(more))
		}
		if n == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("producer: read %s after line %d: %w", name, line, err)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			// A line cut short is not a key; a resumed run reads it again.
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
		lr.at = position{at: offset, n: line}
		if err != nil { // EOF without a final newline
			return nil
		}
		if err := lr.tick(ctx, line); err != nil {
			return err
		}
	}
	return nil
}

// hash adds bytes read from the list to its hash.
func (lr *listReader) hash(b []byte) {
	lr.h.Write(b)
	lr.hashed += int64(len(b))
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

// save saves the checkpoint at lr.at, which the caller has made sure is acknowledged, with the
// list's identity and the hash of the bytes before it.
func (lr *listReader) save(ctx context.Context) error {
	lr.lastSave, lr.savedLines = time.Now(), lr.at.n
	if lr.cpKey == "" || lr.hashed != lr.at.at {
		return nil
	}
	state, err := lr.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("producer: checkpoint of %s: hash state: %w", lr.cp.Path, err)
	}
	lr.cp.Offset, lr.cp.Line = lr.at.at, lr.at.n
	lr.cp.Identity, lr.cp.SHA256, lr.cp.HashState = lr.id, hex.EncodeToString(lr.h.Sum(nil)), state
	b, _ := json.Marshal(lr.cp)
	return lr.s.putCheckpoint(ctx, lr.cpKey, b)
}
