package diff

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-migrate/ferry/shared/keylist"
	"github.com/ferry-migrate/ferry/shared/progress"
)

// diffProgress tells shared/progress what the diff is doing: which list it sorts (a bar over the
// list's bytes), or how many lines it has merged. Its methods may be called on a nil value.
type diffProgress struct {
	r     *progress.Reporter
	start time.Time

	mu    sync.Mutex
	label string
	l     *keylist.List
	n     atomic.Int64 // merged lines
}

// newProgress starts reporting: a bar on a terminal, nothing otherwise (scripts read diff's
// output).
func newProgress() *diffProgress {
	p := &diffProgress{start: time.Now()}
	p.r = progress.Start("ferry diff", p.status, progress.Options{TTYOnly: true})
	return p
}

func (p *diffProgress) status() progress.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.l != nil && p.l.Size() > 0:
		return progress.Status{Done: float64(p.l.Consumed()), Total: float64(p.l.Size()),
			Text: fmt.Sprintf("%s %s (%d MB)", p.label, p.l.Name(), p.l.Size()>>20)}
	case p.l != nil:
		return progress.Status{Text: fmt.Sprintf("%s %s, %d MB read", p.label, p.l.Name(), p.l.Consumed()>>20)}
	}
	return progress.Status{Text: fmt.Sprintf("%s, %s lines", p.label, thousands(p.n.Load()))}
}

// list says which key list is being sorted.
func (p *diffProgress) list(label string, l *keylist.List) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.label, p.l = "sorting "+label, l
	p.mu.Unlock()
}

// phase names a step without a list.
func (p *diffProgress) phase(label string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.label, p.l = label, nil
	p.mu.Unlock()
}

func (p *diffProgress) merged(n int64) {
	if p != nil {
		p.n.Store(n)
	}
}

// done shows the last status and stops.
func (p *diffProgress) done() {
	if p != nil {
		p.r.Stop()
	}
}
