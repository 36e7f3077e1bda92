// Package refusal tells an S3 refusal of one object from a refusal of every object. When S3
// refuses a key, a stage asks again where it is known to be allowed (a probe): allowed there, the
// refusal is the object's own (an object lock, a policy on its prefix, a key it may not use) and
// the key is dead-lettered; refused there too, it is the bucket's or the credentials' and the stage
// stops rather than dead-letter the backlog. The uploader (a write probe) and the verifier (a read
// probe) share it.
package refusal

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// failFor is how long a failed probe's answer (refused, or no answer) is reused for later
// refusals: reusing it can only stop or delay the stage, never dead-letter a key. An allowed
// answer is never reused for a refusal that came after the probe began, so that a policy revoked
// between two keys is seen at the first key it refuses.
const failFor = 5 * time.Second

// Judge remembers where S3 last allowed this process and runs the probes. The zero value is
// ready once Target and Probe are set. Its lock is never held during a probe.
type Judge struct {
	// Target is the key a probe asks about: near known, a key S3 allowed before, in dir (known's
	// directory), or when known is "" in dir alone (the refused key's top-level directory). A dir
	// is "" for the bucket root, else it ends in "/".
	Target func(known, dir string) string
	// Probe asks S3 about a target; nil: allowed.
	Probe func(ctx context.Context, target string) error
	// Known, when set, is a key S3 allowed before this process started (see LastDone). It is
	// asked when a refusal comes before anything was allowed, until it answers without error.
	Known func(ctx context.Context) (string, error)

	mu      sync.Mutex
	good    string // the last key S3 allowed
	seeded  bool   // Known answered
	flights map[string]*flight
}

// flight is one probe; the callers that want the same target while it runs share it.
type flight struct {
	start time.Time
	done  chan struct{} // closed when err and end are set
	err   error
	end   time.Time
}

// Good records a key S3 allowed (written, or read).
func (j *Judge) Good(key string) {
	j.mu.Lock()
	j.good = key
	j.mu.Unlock()
}

// Check is asked when S3 refused refusedKey: nil if S3 allows this process next to the last key
// it allowed, or else in the refused key's top-level directory (the destination prefix of a
// "prefix/{key}" template, the bucket root for a key without one), so the refusal is that
// object's own. Otherwise it returns the answer of the first place asked, the most trusted.
//
// The places are where this job's keys live, not a fixed location: a least-privilege policy
// (PutObject on "prefix/*" only) refuses a probe anywhere else, which would stop the stage at the
// first object refused on its own; and a policy that refuses every key of the job refuses the
// probe next to them too.
func (j *Judge) Check(ctx context.Context, refusedKey string) error {
	arrived := time.Now()
	var first error
	for i, t := range j.targets(ctx, refusedKey) {
		err := j.ask(ctx, t, arrived)
		if err == nil {
			return nil
		}
		if i == 0 {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return first
}

// targets are the probe keys to ask, in order, without repeats.
func (j *Judge) targets(ctx context.Context, refusedKey string) []string {
	j.mu.Lock()
	good, seeded := j.good, j.seeded
	j.mu.Unlock()
	if good == "" && !seeded && j.Known != nil {
		known, err := j.Known(ctx) // outside the lock: a NATS call
		j.mu.Lock()
		if err == nil {
			j.seeded = true
			if j.good == "" {
				j.good = known
			}
		}
		good = j.good
		j.mu.Unlock()
	}
	var ts []string
	if good != "" {
		ts = append(ts, j.Target(good, good[:strings.LastIndex(good, "/")+1]))
	}
	if t := j.Target("", refusedKey[:strings.Index(refusedKey, "/")+1]); len(ts) == 0 || ts[0] != t {
		ts = append(ts, t)
	}
	return ts
}

// ask runs the probe of target, or shares one: a running probe that began after this refusal
// arrived, or a failed answer younger than failFor. An allowed answer of a probe that began
// before could predate what refused this key: it is asked again.
func (j *Judge) ask(ctx context.Context, target string, arrived time.Time) error {
	for {
		j.mu.Lock()
		f := j.flights[target]
		if f == nil || !f.serves(arrived) {
			f = &flight{start: time.Now(), done: make(chan struct{})}
			j.prune()
			if j.flights == nil {
				j.flights = map[string]*flight{}
			}
			j.flights[target] = f
			go j.run(ctx, target, f)
		}
		j.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.err != nil || !f.start.Before(arrived) {
			return f.err
		}
	}
}

// run probes target for f. The probe does not end with the context of the caller that started
// it, which others may share; the S3 client bounds each request by the destination's timeout.
func (j *Judge) run(ctx context.Context, target string, f *flight) {
	err := j.Probe(context.WithoutCancel(ctx), target)
	j.mu.Lock()
	f.err, f.end = err, time.Now()
	j.mu.Unlock()
	close(f.done)
}

// serves reports whether f can answer a refusal that arrived then: it is running (the caller
// waits, then checks its start), or it failed less than failFor ago, or it was allowed and began
// after the refusal arrived. Called with j.mu held.
func (f *flight) serves(arrived time.Time) bool {
	switch {
	case f.end.IsZero():
		return true
	case f.err != nil:
		return time.Since(f.end) < failFor
	}
	return !f.start.Before(arrived)
}

// prune drops answers older than failFor. Called with j.mu held.
func (j *Judge) prune() {
	for t, f := range j.flights {
		if !f.end.IsZero() && time.Since(f.end) >= failFor {
			delete(j.flights, t)
		}
	}
}

// LastDone is a Judge.Known for job n: the S3 key of its last entry in DONE, an object ferry
// wrote and the verifier read, so that a restarted stage whose first message is refused still
// has a place it knows. "" when DONE is empty.
func LastDone(js jetstream.JetStream, n bus.Names) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		if js == nil {
			return "", nil
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, n.Done)
		if err != nil {
			return "", err
		}
		m, err := s.GetLastMsgForSubject(ctx, n.DoneSubject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		return bus.Text(m.Header, bus.HdrS3Key)
	}
}
