// Package runstore is the store folder of `ferry run` (--data): its embedded JetStream server's
// data, a lock held while a ferry run uses it, and the URL that run's server listens on. Every
// other command given --data reaches the job there: through the running server, or, when no
// ferry run holds the folder, through a server of its own on the same store for as long as the
// command runs.
package runstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// Files in the store folder.
const (
	lockFile = "run.lock" // flock'ed by the process serving the store
	urlFile  = "nats.url" // the running ferry run's client URL
	natsDir  = "nats"     // the JetStream store
)

// NATSDir is where the JetStream server of the store folder dir keeps its data.
func NATSDir(dir string) string { return filepath.Join(dir, natsDir) }

// Owner holds a store folder: no other process serves it (two servers on one store would
// corrupt it) until Close.
type Owner struct {
	dir string
	f   *os.File
}

// Lock takes the store folder dir (made if missing) for this process, or says who has it.
func Lock(dir string) (*Owner, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--data %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("--data %s: %w", dir, ErrInUse)
		}
		return nil, fmt.Errorf("--data %s: lock: %w", dir, err)
	}
	return &Owner{dir: dir, f: f}, nil
}

// ErrInUse: another process serves the store folder.
var ErrInUse = errors.New("another ferry process serves this store (a ferry run, or a command reaching its job)")

// Publish records url as where the store's server listens, for Reach.
func (o *Owner) Publish(url string) error {
	tmp := filepath.Join(o.dir, urlFile+".tmp")
	if err := os.WriteFile(tmp, []byte(url+"\n"), 0o644); err != nil {
		return fmt.Errorf("--data %s: %w", o.dir, err)
	}
	return os.Rename(tmp, filepath.Join(o.dir, urlFile))
}

// Close withdraws the URL and releases the folder.
func (o *Owner) Close() {
	os.Remove(filepath.Join(o.dir, urlFile))
	o.f.Close() // releases the flock
}

// Reach returns the URL of the JetStream server of the store folder dir: the running ferry run's,
// or one started here on the store when no process serves it, which stop shuts down (stop is a
// no-op for a running ferry run's).
func Reach(dir string) (url string, stop func(), err error) {
	if _, err := os.Stat(NATSDir(dir)); err != nil {
		return "", nil, fmt.Errorf("--data %s: no ferry run store there (%w)", dir, err)
	}
	o, err := Lock(dir)
	if errors.Is(err, ErrInUse) {
		b, rerr := os.ReadFile(filepath.Join(dir, urlFile))
		if rerr != nil {
			return "", nil, fmt.Errorf("--data %s: a process serves the store but published no URL: %w", dir, rerr)
		}
		return strings.TrimSpace(string(b)), func() {}, nil
	}
	if err != nil {
		return "", nil, err
	}
	srv, err := bus.StartEmbedded(NATSDir(dir), bus.SyncAlways)
	if err != nil {
		o.Close()
		return "", nil, err
	}
	if err := o.Publish(srv.URL()); err != nil {
		srv.Shutdown()
		o.Close()
		return "", nil, err
	}
	return srv.URL(), func() { srv.Shutdown(); o.Close() }, nil
}
