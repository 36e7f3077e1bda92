package keydiff

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-migrate/ferry/shared/keylist"
)

// progress is a status line on a terminal, rewritten every second; nil (not a terminal) prints
// nothing. Its methods may be called on a nil *progress.
type progress struct {
	w     io.Writer
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup

	mu    sync.Mutex
	label string
	l     *keylist.List
	n     atomic.Int64 // merged lines
	last  int          // length of the last line printed
}

// newProgress starts a status line on stderr when it is a terminal.
func newProgress() *progress {
	fi, err := os.Stderr.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	p := &progress{w: os.Stderr, start: time.Now(), stop: make(chan struct{})}
	p.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.print()
			}
		}
	})
	return p
}

// list says which key list is being sorted.
func (p *progress) list(label string, l *keylist.List) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.label, p.l = "sorting "+label, l
	p.mu.Unlock()
}

// phase names a step without a list.
func (p *progress) phase(label string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.label, p.l = label, nil
	p.mu.Unlock()
}

func (p *progress) merged(n int64) {
	if p != nil {
		p.n.Store(n)
	}
}

func (p *progress) print() {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("ferry diff %s: %s", time.Since(p.start).Round(time.Second), p.label)
	switch {
	case p.l != nil && p.l.Size() > 0:
		s += fmt.Sprintf(" %s, %.0f%% of %d MB", p.l.Name(), 100*float64(p.l.Consumed())/float64(p.l.Size()), p.l.Size()>>20)
	case p.l != nil:
		s += fmt.Sprintf(" %s, %d MB read", p.l.Name(), p.l.Consumed()>>20)
	default:
		s += fmt.Sprintf(", %s lines", thousands(p.n.Load()))
	}
	pad := max(p.last-len(s), 0)
	p.last = len(s)
	fmt.Fprintf(p.w, "\r%s%*s", s, pad, "")
}

// done ends the status line.
func (p *progress) done() {
	if p == nil {
		return
	}
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.wg.Wait()
	if p.last > 0 {
		fmt.Fprintf(p.w, "\r%*s\r", p.last, "")
	}
}
