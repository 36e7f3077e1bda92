// Package deadletter reads the job's dead letters back from its DLQ stream: counts by stage and
// reason, and each entry in order. `ferry dlq`, `ferry status`, `ferry report` and `ferry run`
// read them through it; bus writes them (bus.PublishDeadLetter).
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
)

// Filter selects dead letters; empty lists select all.
type Filter struct {
	Stages, Reasons []string
}

var stages = []string{bus.StageProducer, bus.StageFetcher, bus.StageUploader, bus.StageVerifier, bus.StageAdvisor}

// Validate checks every stage and reason is a known one.
func (f Filter) Validate() error {
	var errs []error
	for _, s := range f.Stages {
		if !slices.Contains(stages, s) {
			errs = append(errs, fmt.Errorf("--stage %q: want one of %s", s, strings.Join(stages, ", ")))
		}
	}
	for _, r := range f.Reasons {
		if !slices.Contains(bus.Reasons, r) {
			errs = append(errs, fmt.Errorf("--reason %q: want one of %s", r, strings.Join(bus.Reasons, ", ")))
		}
	}
	return config.Invalid(errors.Join(errs...))
}

// Subjects are the DLQ subjects the filter selects.
func (f Filter) Subjects(n bus.Names) []string {
	st, rs := f.Stages, f.Reasons
	if len(st) == 0 {
		st = []string{"*"}
	}
	if len(rs) == 0 {
		rs = []string{"*"}
	}
	var out []string
	for _, s := range st {
		for _, r := range rs {
			out = append(out, n.DLQSubject(s, r))
		}
	}
	return out
}

// Counts are dead letters by "stage/reason".
type Counts map[string]uint64

// Count counts the job's dead letters by stage and reason.
func Count(ctx context.Context, js jetstream.JetStream, n bus.Names) (Counts, error) {
	s, err := js.Stream(ctx, n.DLQ)
	if err != nil {
		return nil, fmt.Errorf("dlq: stream %s: %w", n.DLQ, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(n.DLQSubjects))
	if err != nil {
		return nil, fmt.Errorf("dlq: stream info %s: %w", n.DLQ, err)
	}
	c := Counts{}
	prefix := "ferry." + n.Job + ".dlq."
	for subj, k := range info.State.Subjects {
		c[strings.Replace(strings.TrimPrefix(subj, prefix), ".", "/", 1)] += k
	}
	return c, nil
}

// Total is the number of dead letters.
func (c Counts) Total() uint64 {
	var t uint64
	for _, k := range c {
		t += k
	}
	return t
}

// Print writes the counts as a table.
func (c Counts) Print(w io.Writer) {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tREASON\tKEYS")
	for _, k := range keys {
		st, r, _ := strings.Cut(k, "/")
		fmt.Fprintf(tw, "%s\t%s\t%d\n", st, r, c[k])
	}
	fmt.Fprintf(tw, "total\t\t%d\n", c.Total())
	tw.Flush()
}

// Entry is one dead letter as read back.
type Entry struct {
	Seq                         uint64
	Key                         string
	Stage, Reason, Err, Attempt string
	Origin                      string
	Time                        time.Time // stored in the DLQ
}

// Each calls fn for every dead letter the filter selects, oldest first, up to limit (0: all).
func Each(ctx context.Context, js jetstream.JetStream, n bus.Names, f Filter, limit int, fn func(Entry) error) (int, error) {
	s, err := js.Stream(ctx, n.DLQ)
	if err != nil {
		return 0, fmt.Errorf("dlq: stream %s: %w", n.DLQ, err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: f.Subjects(n)})
	if err != nil {
		return 0, fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
	}
	if info.NumPending == 0 {
		return 0, nil
	}
	done := 0
	for limit == 0 || done < limit {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return done, fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return done, err
		}
		if err := fn(entryOf(msg, md)); err != nil {
			return done, err
		}
		done++
		if md.NumPending == 0 {
			break
		}
	}
	return done, nil
}

// AfterKeys counts the dead letters of keys that had reached KEYS: all but the producer's.
func (c Counts) AfterKeys() uint64 {
	var t uint64
	for sr, k := range c {
		if !strings.HasPrefix(sr, bus.StageProducer+"/") {
			t += k
		}
	}
	return t
}

// Cursor is where a reader that follows the DLQ is: the next sequence of the stream created at
// Created.
type Cursor struct {
	Next    uint64
	Created time.Time
}

// Since calls fn for every dead letter from the cursor up to the DLQ's last when the call began,
// oldest first, and moves the cursor past each. It pulls in batches (a reader that follows a DLQ
// of millions, such as the manifest drain, reads it once, then what is new). A DLQ deleted and
// made again restarts its sequences, so it is read from its start; a DLQ that does not exist has
// nothing to read.
func Since(ctx context.Context, js jetstream.JetStream, n bus.Names, cur *Cursor, fn func(Entry) error) error {
	s, err := js.Stream(ctx, n.DLQ)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		*cur = Cursor{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("dlq: stream %s: %w", n.DLQ, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("dlq: stream info %s: %w", n.DLQ, err)
	}
	if !info.Created.Equal(cur.Created) {
		*cur = Cursor{Next: 1, Created: info.Created}
	}
	cur.Next = max(cur.Next, 1)
	last := info.State.LastSeq
	if info.State.Msgs == 0 || last < cur.Next {
		cur.Next = max(cur.Next, last+1)
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: cur.Next, InactiveThreshold: time.Minute})
	if err != nil {
		return fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
	}
	if ci := c.CachedInfo(); ci == nil || ci.NumPending == 0 {
		cur.Next = last + 1 // deleted since the info
		return nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return fmt.Errorf("dlq: read %s: %w", n.DLQ, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			return fmt.Errorf("dlq: read %s from sequence %d: %w", n.DLQ, cur.Next, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("dlq: read %s from sequence %d: %w", n.DLQ, cur.Next, err)
		}
		if err := fn(entryOf(msg, md)); err != nil {
			return err
		}
		cur.Next = md.Sequence.Stream + 1
		if md.Sequence.Stream >= last || md.NumPending == 0 {
			return nil
		}
	}
}

func entryOf(msg jetstream.Msg, md *jetstream.MsgMetadata) Entry {
	h := msg.Headers()
	return Entry{Seq: md.Sequence.Stream, Key: string(msg.Data()), Stage: h.Get(bus.HdrStage),
		Reason: h.Get(bus.HdrReason), Err: h.Get(bus.HdrError), Attempt: h.Get(bus.HdrAttempts),
		Origin: h.Get(bus.HdrOrigin), Time: md.Timestamp}
}
