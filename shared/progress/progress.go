// Package progress shows how far a long command has got: on a terminal a bar redrawn in place
// every second, otherwise a plain log line every interval (ten seconds by default), so a
// container's log gets a steady record instead of carriage returns.
package progress

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Status is what a command reports: Done of Total (Total 0: unknown, no bar) and a line of text.
type Status struct {
	Done, Total float64
	Text        string
}

// Fraction is Done/Total in [0, 1], or -1 when Total is unknown.
func (s Status) Fraction() float64 {
	if s.Total <= 0 {
		return -1
	}
	return min(max(s.Done/s.Total, 0), 1)
}

// Options configure a Reporter; the zero value is a bar on stderr when it is a terminal.
type Options struct {
	Out   io.Writer     // default os.Stderr
	TTY   *bool         // default: whether Out is a terminal
	Every time.Duration // log-line interval off a terminal; default 10s
	Log   *slog.Logger  // default slog.Default()
	// TTYOnly shows nothing off a terminal: a command whose output scripts read (ferry diff)
	// logs no progress lines into them.
	TTYOnly bool
}

// Reporter calls its status func periodically and shows the result.
type Reporter struct {
	name   string
	status func() Status
	o      Options
	tty    bool
	start  time.Time
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// Start begins reporting status under name (e.g. "producer") until Stop.
func Start(name string, status func() Status, o Options) *Reporter {
	if o.Out == nil {
		o.Out = os.Stderr
	}
	if o.Every <= 0 {
		o.Every = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Reporter{name: name, status: status, o: o, start: time.Now(), stop: make(chan struct{})}
	if o.TTY != nil {
		r.tty = *o.TTY
	} else if f, ok := o.Out.(*os.File); ok {
		r.tty = IsTerminal(f)
	}
	every := o.Every
	if r.tty {
		every = time.Second
	}
	r.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
				r.show(false)
			}
		}
	})
	return r
}

// Stop shows the final status (a last bar with a newline, or a last log line) and stops.
func (r *Reporter) Stop() {
	r.once.Do(func() {
		close(r.stop)
		r.wg.Wait()
		r.show(true)
	})
}

func (r *Reporter) show(final bool) {
	if !r.tty && r.o.TTYOnly {
		return
	}
	s := r.status()
	if !r.tty {
		args := []any{"elapsed", time.Since(r.start).Round(time.Second).String()}
		if f := s.Fraction(); f >= 0 {
			args = append(args, "percent", fmt.Sprintf("%.1f", 100*f))
		}
		r.o.Log.Info(r.name+": "+s.Text, args...)
		return
	}
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(r.o.Out, "\r%s %s %s\033[K%s", r.name, Bar(s.Fraction(), 24), s.Text, end)
}

// Bar draws f (0..1) as [#####.....] 50.0% in width cells; f < 0 (unknown) as elapsed-style
// [   ?   ] of the same width.
func Bar(f float64, width int) string {
	if f < 0 {
		return "[" + strings.Repeat(" ", width/2-1) + "?" + strings.Repeat(" ", width-width/2) + "]      "
	}
	n := int(f * float64(width))
	return fmt.Sprintf("[%s%s] %5.1f%%", strings.Repeat("#", n), strings.Repeat(".", width-n), 100*f)
}

// IsTerminal reports whether f is a character device (a terminal).
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// ETA is the time left when done of total took elapsed, with done measured from base (what was
// already done when the command started); "?" when it cannot be told.
func ETA(elapsed time.Duration, base, done, total float64) string {
	switch {
	case total > 0 && done >= total:
		return "0s"
	case total <= 0 || done <= base:
		return "?"
	}
	return (time.Duration(float64(elapsed) * (total - done) / (done - base))).Round(time.Second).String()
}
