package refusal

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

var errRefused = errors.New("AccessDenied")

// probes is a Judge's S3: it records the targets asked and answers by answer.
type probes struct {
	mu     sync.Mutex
	asked  []string
	answer func(target string, n int) error // n: this probe's number, from 1
	gate   chan struct{}                    // if set, every probe waits for it
}

func (p *probes) judge() *Judge {
	return &Judge{
		Target: func(_, dir string) string { return dir + "probe" }, // as the uploader's
		Probe: func(_ context.Context, target string) error {
			p.mu.Lock()
			p.asked = append(p.asked, target)
			n := len(p.asked)
			p.mu.Unlock()
			if p.gate != nil {
				<-p.gate
			}
			return p.answer(target, n)
		},
	}
}

func (p *probes) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.asked)
}

func TestCheckPlaces(t *testing.T) {
	ctx := context.Background()
	refuseAll := func(string, int) error { return errRefused }
	tests := []struct {
		name, good, refused string
		known               string
		want                []string
	}{
		{name: "nothing allowed yet: the refused key's top-level directory", refused: "p/locked/1", want: []string{"p/probe"}},
		{name: "no directory: the bucket root", refused: "k", want: []string{"probe"}},
		{name: "next to the last key allowed, then the top-level directory", good: "b/2024/a/k", refused: "b/2024/legal/x", want: []string{"b/2024/a/probe", "b/probe"}},
		{name: "the same place once", good: "p/k", refused: "p/x", want: []string{"p/probe"}},
		{name: "a key allowed before this process", known: "b/2024/a/k", refused: "b/2024/legal/x", want: []string{"b/2024/a/probe", "b/probe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &probes{answer: refuseAll}
			j := p.judge()
			if tt.known != "" {
				j.Known = func(context.Context) (string, error) { return tt.known, nil }
			}
			if tt.good != "" {
				j.Good(tt.good)
			}
			if err := j.Check(ctx, tt.refused); !errors.Is(err, errRefused) {
				t.Errorf("Check = %v; want the refusal", err)
			}
			if got := p.list(); !slices.Equal(got, tt.want) {
				t.Errorf("asked %q, want %q", got, tt.want)
			}
		})
	}
}

// Allowed in either place is enough; refused everywhere returns the first place's answer.
func TestCheckAnswer(t *testing.T) {
	ctx := context.Background()
	slow := errors.New("SlowDown")
	p := &probes{answer: func(target string, _ int) error {
		if target == "b/a/probe" {
			return slow
		}
		return nil
	}}
	j := p.judge()
	j.Good("b/a/k")
	if err := j.Check(ctx, "b/x"); err != nil {
		t.Errorf("allowed in the top-level directory: Check = %v", err)
	}
	p = &probes{answer: func(target string, _ int) error {
		if target == "b/a/probe" {
			return slow
		}
		return errRefused
	}}
	j = p.judge()
	j.Good("b/a/k")
	if err := j.Check(ctx, "b/x"); !errors.Is(err, slow) {
		t.Errorf("Check = %v; want the answer next to the key allowed last", err)
	}
}

// Known is asked until it answers; its failure is no place.
func TestCheckKnown(t *testing.T) {
	ctx := context.Background()
	p := &probes{answer: func(string, int) error { return errRefused }}
	j := p.judge()
	calls := 0
	j.Known = func(context.Context) (string, error) {
		calls++
		if calls == 1 {
			return "", errors.New("nats: timeout")
		}
		return "q/k", nil
	}
	_ = j.Check(ctx, "p/x")
	_ = j.Check(ctx, "p/y")
	_ = j.Check(ctx, "p/z")
	if calls != 2 {
		t.Errorf("Known asked %d times; want until it answered (2)", calls)
	}
	if got := p.list(); !slices.Equal(got, []string{"p/probe", "q/probe"}) {
		t.Errorf("asked %q", got) // p/y's answer in p/ is the failure of p/x, reused
	}
}

// An allowed answer is never reused for a later refusal (a revocation in between must be seen);
// a failed one is, for failFor.
func TestCheckReuse(t *testing.T) {
	ctx := context.Background()
	allowed := &probes{answer: func(string, int) error { return nil }}
	j := allowed.judge()
	for range 3 {
		if err := j.Check(ctx, "p/x"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(allowed.list()); n != 3 {
		t.Errorf("3 refusals, allowed each time: %d probes, want 3", n)
	}
	refused := &probes{answer: func(string, int) error { return errRefused }}
	j = refused.judge()
	for range 3 {
		if err := j.Check(ctx, "p/x"); !errors.Is(err, errRefused) {
			t.Fatal(err)
		}
	}
	if n := len(refused.list()); n != 1 {
		t.Errorf("3 refusals, probe refused: %d probes, want 1 (reused for %v)", n, failFor)
	}
}

// Refusals that arrive while a probe runs share it when it began after them, and ask again when
// it began before (an allowed answer could predate what refused them). The lock is free while a
// probe waits on S3. Run with -race.
func TestCheckConcurrent(t *testing.T) {
	ctx := context.Background()
	p := &probes{gate: make(chan struct{}), answer: func(_ string, n int) error {
		if n == 1 {
			return nil // allowed, then revoked
		}
		return errRefused
	}}
	j := p.judge()
	first := make(chan error, 1)
	go func() { first <- j.Check(ctx, "p/x") }()
	for len(p.list()) == 0 {
		time.Sleep(time.Millisecond)
	}
	const late = 32
	errs := make(chan error, late)
	var wg sync.WaitGroup
	for range late {
		wg.Go(func() { errs <- j.Check(ctx, "p/y") })
	}
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			j.Good("p/" + string(rune('a'+i%26))) // the same place as the refused keys
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Good waited for a running probe")
	}
	time.Sleep(50 * time.Millisecond) // the late ones are waiting
	close(p.gate)
	if err := <-first; err != nil {
		t.Errorf("first refusal: Check = %v; want allowed", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, errRefused) {
			t.Errorf("a refusal that came while an earlier probe ran took its allowed answer: %v", err)
			break
		}
	}
	if n := len(p.list()); n != 2 {
		t.Errorf("%d probes; want 2 (the first, and one shared by the %d late ones)", n, late)
	}
}

// A caller whose context ends stops waiting; the probe it started still answers the others.
func TestCheckCancelled(t *testing.T) {
	p := &probes{gate: make(chan struct{}), answer: func(string, int) error { return nil }}
	j := p.judge()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- j.Check(ctx, "p/x") }()
	for len(p.list()) == 0 {
		time.Sleep(time.Millisecond)
	}
	other := make(chan error, 1)
	go func() { other <- j.Check(context.Background(), "p/y") }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: Check = %v", err)
	}
	close(p.gate)
	if err := <-other; err != nil {
		t.Errorf("other caller: Check = %v", err)
	}
}
