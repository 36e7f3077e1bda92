package prune

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/config"
)

// ProofKey is the KV key (job's KV) of the last proof.
const ProofKey = "proof.last"

// Proof is the summary of the last prune run, stored under ProofKey for `ferry report`. JSON
// field names are stable.
type Proof struct {
	Time        time.Time `json:"time"`
	ScanStart   time.Time `json:"scan_start"`
	ScanEnd     time.Time `json:"scan_end"`
	Consistency string    `json:"consistency"`          // the level the scan read at
	Required    string    `json:"required_consistency"` // the job file's prune.consistency
	Complete    bool      `json:"complete"`             // every token range of every table read to its end
	Tables      []string  `json:"tables"`               // target:keyspace.table scanned
	// Floor is the writetime (µs) from which source keys were checked for staleness: the first
	// scan pass's start less the largest --since-margin of any pass, and at least MinStaleMargin;
	// 0 when there is no pass record or with --check-all (every key checked).
	Floor       int64  `json:"stale_floor_us"`
	SourceKeys  int64  `json:"source_keys"`
	Objects     int64  `json:"objects"`
	Missing     int64  `json:"missing_in_s3"`
	Invalid     int64  `json:"invalid_keys"`  // part of Missing: keys the rules refuse
	Shared      int64  `json:"shared_object"` // part of Missing: keys whose S3 key holds another key's object
	OnlyInS3    int64  `json:"only_in_s3"`    // found by the scan; Deleted + Quarantined of them are gone
	Recent      int64  `json:"newer_than_scan"`
	Checked     int64  `json:"checked"`
	Stale       int64  `json:"stale"`
	Unchecked   int64  `json:"unchecked"` // HEADs that failed
	Deleted     int64  `json:"deleted"`
	Quarantine  string `json:"quarantine,omitempty"`
	Quarantined int64  `json:"quarantined"`
	Gone        int64  `json:"gone"` // candidates already deleted by someone else when the run came to them
	Failed      int64  `json:"failed"`
	DryRun      bool   `json:"dry_run"`
	Error       string `json:"error,omitempty"` // why the scan or the listing did not finish
	// Examples are up to 100 keys of each failing class: missing, only_in_s3, stale, recent.
	Examples map[string][]string `json:"examples"`
}

// Remaining is the objects only in S3 still there after the run.
func (p Proof) Remaining() int64 { return max(p.OnlyInS3-p.Deleted-p.Quarantined-p.Gone, 0) }

// Proven says whether the cut-over is proven: a complete scan at the required consistency found
// the source key set and the bucket listing equal, and no stale object.
func (p Proof) Proven() bool {
	strong, _ := cass.AtLeast(p.Consistency, p.Required)
	return p.Complete && strong && p.Missing == 0 && p.Remaining() == 0 && p.Stale == 0 && p.Unchecked == 0 && p.Recent == 0
}

// Why says what keeps the proof from holding; "" when it holds.
func (p Proof) Why() string {
	var why []string
	switch {
	case !p.Complete && p.Error != "":
		why = append(why, "the scan is not complete: "+p.Error)
	case !p.Complete:
		why = append(why, "the scan did not finish")
	}
	if ok, _ := cass.AtLeast(p.Consistency, p.Required); !ok {
		why = append(why, fmt.Sprintf("the scan read at %s, below the required %s", p.Consistency, p.Required))
	}
	switch {
	case p.Shared > 0:
		why = append(why, fmt.Sprintf("%d source keys have no object (%d of them map to an S3 key whose object another source key owns)", p.Missing, p.Shared))
	case p.Missing > 0:
		why = append(why, fmt.Sprintf("%d source keys have no object", p.Missing))
	}
	if n := p.Remaining(); n > 0 {
		why = append(why, fmt.Sprintf("%d objects have no source key", n))
	}
	if p.Stale > 0 {
		why = append(why, fmt.Sprintf("%d objects are older than their source row", p.Stale))
	}
	if p.Unchecked > 0 {
		why = append(why, fmt.Sprintf("%d objects could not be checked", p.Unchecked))
	}
	if p.Recent > 0 {
		why = append(why, fmt.Sprintf("%d objects were written during the scan (run again when nothing writes)", p.Recent))
	}
	return joinWhy(why)
}

func joinWhy(w []string) string {
	s := ""
	for i, x := range w {
		if i > 0 {
			s += "; "
		}
		s += x
	}
	return s
}

// proofOf builds the proof of a run.
func proofOf(res *Result, o Options, consistency, required string, tables []string) Proof {
	return Proof{Time: time.Now().UTC(), ScanStart: res.ScanStart.UTC(), ScanEnd: res.ScanEnd.UTC(),
		Consistency: consistency, Required: required, Complete: true, Tables: tables, Floor: o.staleFloor(),
		SourceKeys: res.SourceKeys, Objects: res.Objects, Missing: res.Missing, Invalid: res.Invalid, Shared: res.Shared,
		OnlyInS3: res.OnlyInS3, Recent: res.Recent, Checked: res.Checked, Stale: res.Stale, Unchecked: res.Unchecked,
		Deleted: res.Deleted, Quarantine: o.Quarantine, Quarantined: res.Quarantined, Gone: res.Gone, Failed: res.Failed,
		DryRun: !o.Delete, Examples: res.Examples}
}

// QuarantineKey is the KV key (job's KV) of every quarantine prefix a prune run has moved objects
// under (a JSON list): later runs never take objects under them for candidates, with or without
// --quarantine.
const QuarantineKey = "prune.quarantine"

// quarantines reads the quarantine prefixes used so far.
func quarantines(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	e, err := kv.Get(ctx, QuarantineKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", QuarantineKey, err)
	}
	var ps []string
	if err := json.Unmarshal(e.Value(), &ps); err != nil {
		return nil, fmt.Errorf("read %s: %w", QuarantineKey, err)
	}
	return ps, nil
}

// addQuarantine records prefix among the quarantine prefixes, before anything is moved there.
func addQuarantine(ctx context.Context, kv jetstream.KeyValue, known []string, prefix string) error {
	if prefix == "" || slices.Contains(known, prefix) {
		return nil
	}
	b, _ := json.Marshal(append(slices.Clone(known), prefix))
	if _, err := kv.Put(ctx, QuarantineKey, b); err != nil {
		return fmt.Errorf("record quarantine prefix %q (%s): %w", prefix, QuarantineKey, err)
	}
	return nil
}

// SaveProof stores p under ProofKey.
func SaveProof(ctx context.Context, kv jetstream.KeyValue, p Proof) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, ProofKey, b); err != nil {
		return fmt.Errorf("store the proof (%s): %w", ProofKey, err)
	}
	return nil
}

// LoadProof reads the last proof; nil when there is none.
func LoadProof(ctx context.Context, kv jetstream.KeyValue) (*Proof, error) {
	e, err := kv.Get(ctx, ProofKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the proof (%s): %w", ProofKey, err)
	}
	var p Proof
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, fmt.Errorf("read the proof (%s): %w", ProofKey, err)
	}
	return &p, nil
}

// firstPassStart is the earliest start of pass 1 among the scanned targets' tables, in µs; 0 when
// none has a pass record.
func firstPassStart(ctx context.Context, kv jetstream.KeyValue, targets []config.Target) (int64, error) {
	var floor int64
	for _, t := range targets {
		e, err := kv.Get(ctx, checkpoint.PassKey(t, 1))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read scan pass 1 of %s: %w", t.Table, err)
		}
		var p checkpoint.Pass
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return 0, fmt.Errorf("read scan pass 1 of %s: %w", t.Table, err)
		}
		if us := p.Start.UnixMicro(); !p.Start.IsZero() && (floor == 0 || us < floor) {
			floor = us
		}
	}
	return floor, nil
}

// MinStaleMargin is the least the stale floor lies below pass 1's start: a writer whose clock is
// behind ferry's stamps a row it rewrites after pass 1 read it with a writetime before pass 1's
// start.
const MinStaleMargin = 10 * time.Minute

// largestMargin is the largest --since-margin any scan pass of the scanned targets' tables took
// off (its pass record's Margin): the floor of the stale check allows for it too.
func largestMargin(ctx context.Context, kv jetstream.KeyValue, targets []config.Target) (time.Duration, error) {
	var m time.Duration
	for _, t := range targets {
		for n := 1; ; n++ { // passes are numbered from 1 without gaps
			e, err := kv.Get(ctx, checkpoint.PassKey(t, n))
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				break
			}
			if err != nil {
				return 0, fmt.Errorf("read scan pass %d of %s: %w", n, t.Table, err)
			}
			var p checkpoint.Pass
			if err := json.Unmarshal(e.Value(), &p); err != nil {
				return 0, fmt.Errorf("read scan pass %d of %s: %w", n, t.Table, err)
			}
			if p.Margin == "" {
				continue
			}
			d, err := time.ParseDuration(p.Margin)
			if err != nil {
				return 0, fmt.Errorf("read scan pass %d of %s: margin %q: %w", n, t.Table, p.Margin, err)
			}
			m = max(m, d)
		}
	}
	return m, nil
}

// natsRecorder publishes records to the job's PRUNED stream and waits for each to be stored.
type natsRecorder struct {
	js jetstream.JetStream
	n  bus.Names
}

func (r natsRecorder) Record(ctx context.Context, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	m := nats.NewMsg(r.n.PrunedSubject)
	m.Data = b
	// One id per object, action and run: a retried publish is stored once.
	sum := sha256.Sum256([]byte(rec.Run + "\x00" + rec.Object + "\x00" + rec.Action))
	m.Header.Set(jetstream.MsgIDHeader, "pruned:"+hex.EncodeToString(sum[:16]))
	if _, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectStream(r.n.Pruned)); err != nil {
		return fmt.Errorf("publish to %s: %w", r.n.Pruned, err)
	}
	return nil
}

// ReadPruned calls fn with every record of the job's PRUNED stream, oldest first; a job without
// the stream has none.
func ReadPruned(ctx context.Context, js jetstream.JetStream, n bus.Names, fn func(Record) error) error {
	s, err := js.Stream(ctx, n.Pruned)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.Pruned, err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{InactiveThreshold: time.Minute})
	if err != nil {
		return fmt.Errorf("read %s: %w", n.Pruned, err)
	}
	if ci := c.CachedInfo(); ci == nil || ci.NumPending == 0 {
		return nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(500))
	if err != nil {
		return fmt.Errorf("read %s: %w", n.Pruned, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", n.Pruned, err)
		}
		var r Record
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			return fmt.Errorf("read %s: record %q: %w", n.Pruned, m.Data(), err)
		}
		if err := fn(r); err != nil {
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", n.Pruned, err)
		}
		if md.NumPending == 0 {
			return nil
		}
	}
}
