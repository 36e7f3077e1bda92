package uploader

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

var errDenied = &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}

// policyStore is a bucket whose policy is allow: every Put and every write probe is allowed or
// refused by its key, as S3 evaluates a bucket policy. Thread-safe.
type policyStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	allow   func(key string) bool
	probed  []string // keys of the write probes
}

func newPolicyStore(allow func(key string) bool) *policyStore {
	return &policyStore{objects: map[string][]byte{}, allow: allow}
}

func (s *policyStore) putRaw(_ context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.allow(in.Key) {
		return blobstore.PutResult{}, errDenied
	}
	if _, ok := s.objects[in.Key]; ok && in.IfAbsent {
		return blobstore.PutResult{}, blobstore.ErrExists
	}
	s.objects[in.Key] = bytes.Clone(in.Body)
	sum := md5.Sum(in.Body)
	return blobstore.PutResult{ETag: hex.EncodeToString(sum[:])}, nil
}

func (s *policyStore) headRaw(_ context.Context, key string) (blobstore.HeadResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return blobstore.HeadResult{}, blobstore.ErrNotFound
	}
	sum := md5.Sum(b)
	return blobstore.HeadResult{Key: key, Size: int64(len(b)), ETag: hex.EncodeToString(sum[:])}, nil
}

// GetIfMatch: ties never arise here (no writetimes); the object as it is.
func (s *policyStore) GetIfMatch(_ context.Context, key, _ string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return nil, blobstore.Mark(blobstore.ErrNotFound)
	}
	return bytes.Clone(b), nil
}

func (s *policyStore) probewriteRaw(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.probed = append(s.probed, key)
	if !s.allow(key) {
		return errDenied
	}
	return nil
}

func (s *policyStore) probes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.probed...)
}

// wantDeadLetter fails unless err dead-letters the key as refused on its own.
func wantDeadLetter(t *testing.T, what string, err error) {
	t.Helper()
	reason, permanent := stage.IsPermanent(err)
	if !permanent || reason != bus.ReasonUploadError || !strings.Contains(err.Error(), "refuses this object") {
		t.Errorf("%s: Handle = %v (fatal %v); want dead-lettered upload_error, refused on its own", what, err, stage.IsFatal(err))
	}
}

// A least-privilege policy allows PutObject only under the destination prefix "p/" and denies
// "p/legal/". A probe outside the prefix (bucket-wide, .ferry-probe/<job>) would always be
// refused, and one refused object would stop the uploader for good (Fatal: "a write probe was
// refused too"); the probe goes next to a key that was written, so the object is refused alone.
func TestRefusedPrefixScopedPolicy(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := newPolicyStore(func(k string) bool { return strings.HasPrefix(k, "p/") && !strings.HasPrefix(k, "p/legal/") })
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	for i := range 5 {
		if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "k"+strconv.Itoa(i), "p/k"+strconv.Itoa(i), []byte("b"))); err != nil {
			t.Fatal(err)
		}
	}
	wantDeadLetter(t, "p/legal/x after 5 uploads under p/", stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "legal", "p/legal/x", []byte("bytes of legal"))))
	if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "k9", "p/k9", []byte("bytes of k9"))); err != nil {
		t.Errorf("the next key: %v", err)
	}
	for _, p := range store.probes() {
		if !strings.HasPrefix(p, "p/") {
			t.Errorf("write probe at %q: outside the prefix ferry writes to", p)
		}
	}
}

// The same policy, but the refused key is the first this process sees (a restart with the refused
// message first): the probe goes to the refused key's top-level directory, the destination
// prefix of a "p/{key}" template.
func TestRefusedPrefixScopedPolicyFirstKey(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := newPolicyStore(func(k string) bool { return strings.HasPrefix(k, "p/") && !strings.HasPrefix(k, "p/legal/") })
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	wantDeadLetter(t, "p/legal/x first", stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "legal", "p/legal/x", []byte("bytes of legal"))))
}

// A deeper destination prefix ("backups/2024/{key}", the policy allows backups/2024/* only): the
// top-level directory is refused too, so a fresh process asks next to the job's last verified
// key (DONE) instead.
func TestRefusedPrefixScopedPolicyAfterRestart(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := newPolicyStore(func(k string) bool {
		return strings.HasPrefix(k, "backups/2024/") && !strings.HasPrefix(k, "backups/2024/legal/")
	})
	done := nats.NewMsg(n.DoneSubject)
	done.Data = []byte("a/k")
	done.Header.Set(bus.HdrS3Key, "backups/2024/a/k")
	if _, err := js.PublishMsg(ctx, done); err != nil {
		t.Fatal(err)
	}
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	wantDeadLetter(t, "backups/2024/legal/x first after a restart", stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "legal/x", "backups/2024/legal/x", []byte("bytes of legal/x"))))
}

// Key lists are sorted, so the keys under a refused prefix arrive together, before any other.
// The write probe is allowed: each is dead-lettered, and no count of them stops the uploader (a
// restart would get the same keys first and stop again: the job would never end). Before the
// fix: Fatal at the 20th key (the breaker), on every restart.
func TestRefusedSortedPrefix(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := newPolicyStore(func(k string) bool { return !strings.HasPrefix(k, "p/a-locked/") })
	for restart := range 2 {
		u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
		for i := range 25 {
			k := strconv.Itoa(restart) + "-" + strconv.Itoa(i)
			err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, k, "p/a-locked/"+k, []byte("bytes of "+k)))
			if stage.IsFatal(err) {
				t.Fatalf("restart %d: key %d of 25 under a refused prefix (probe allowed): uploader stopped: %v", restart, i, err)
			}
			wantDeadLetter(t, "p/a-locked/"+k, err)
		}
	}
}

// A policy that refuses every key of the job (a deny on the destination prefix "p/") refuses the
// probe next to them too, while the bucket root is writable: the first refused key stops the
// uploader, nothing is dead-lettered. (This replaces TestRefusalsStopTheUploader, whose 20-key
// breaker is gone: it held because the probe asked at the root, where such a policy lets it
// through.)
func TestRefusedEveryKey(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := newPolicyStore(func(k string) bool { return !strings.HasPrefix(k, "p/") })
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "k1", "p/k1", []byte("bytes of k1")))
	if !stage.IsFatal(err) {
		t.Fatalf("every key refused: Handle = %v; want the uploader stopped", err)
	}
	if !strings.Contains(err.Error(), `key "k1"`) || !strings.Contains(err.Error(), "probe") {
		t.Errorf("error %q: want the key and the probe named", err)
	}
}

// One object refused on its own (probe allowed), then the whole bucket is refused. An allowed
// probe's answer is not reused for a later refusal, so the revocation is seen at the first key it
// refuses: nothing more is dead-lettered as "refused on its own". Reusing the allowed answer (for
// 30 s, say) would dead-letter every key refused meanwhile as refused on its own.
func TestRefusedAfterRevocation(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	var revoked bool // under store.mu
	store := newPolicyStore(func(k string) bool { return !revoked && k != "p/locked" })
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	for i := range 80 {
		if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "k"+strconv.Itoa(i), "p/k"+strconv.Itoa(i), []byte("b"))); err != nil {
			t.Fatal(err)
		}
	}
	wantDeadLetter(t, "p/locked", stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "locked", "p/locked", []byte("bytes of locked"))))
	store.mu.Lock()
	revoked = true
	store.mu.Unlock()
	dead := 0
	for i := range 100 {
		err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "r"+strconv.Itoa(i), "p/r"+strconv.Itoa(i), []byte("b")))
		if stage.IsFatal(err) {
			break
		}
		if _, p := stage.IsPermanent(err); p {
			dead++
		}
	}
	if dead > 0 {
		t.Errorf("%d keys dead-lettered as refused on their own after the whole bucket was refused (%d probes)", dead, len(store.probes()))
	}
}

// gatedStore refuses every Put under p/locked/ and holds every write probe until release is
// closed, counting the probes running at once.
type gatedStore struct {
	*policyStore
	release       chan struct{}
	mu            sync.Mutex
	running, most int
	calls         int
}

func (s *gatedStore) probewriteRaw(ctx context.Context, key string) error {
	s.mu.Lock()
	s.calls++
	s.running++
	s.most = max(s.most, s.running)
	s.mu.Unlock()
	<-s.release
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	return s.policyStore.ProbeWrite(ctx, key)
}

// Many workers refused at once share one probe, and the probe holds no lock that a successful
// upload needs: uploads go on while it waits on S3. Run with -race.
func TestRefusedConcurrent(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := &gatedStore{policyStore: newPolicyStore(func(k string) bool { return !strings.HasPrefix(k, "p/locked/") }),
		release: make(chan struct{})}
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	if err := stage.Once(ctx, js, u.Handle, keyedBlobMsg(t, js, n, "first", "p/first", []byte("bytes of first"))); err != nil {
		t.Fatal(err)
	}
	const workers = 16
	msgs := make([]jetstream.Msg, workers)
	for i := range msgs {
		msgs[i] = keyedBlobMsg(t, js, n, "l"+strconv.Itoa(i), "p/locked/"+strconv.Itoa(i), []byte("b"))
	}
	other := keyedBlobMsg(t, js, n, "other", "p/other", []byte("bytes of other"))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range msgs {
		wg.Go(func() { errs[i] = stage.Once(ctx, js, u.Handle, msgs[i]) })
	}
	// While the probe waits on S3, successful uploads record their keys without waiting for it.
	time.Sleep(100 * time.Millisecond)
	ok := make(chan error, 1)
	go func() { ok <- stage.Once(ctx, js, u.Handle, other) }()
	select {
	case err := <-ok:
		if err != nil {
			t.Errorf("an upload while a probe is running: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("an upload waited for the write probe")
	}
	close(store.release)
	wg.Wait()
	for i, err := range errs {
		wantDeadLetter(t, "p/locked/"+strconv.Itoa(i), err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.most != 1 || store.calls > 2 {
		t.Errorf("%d refused workers: %d probes, at most %d at once; want them to share one", workers, store.calls, store.most)
	}
}

// Put answers as the client does: errors carry their fault kind.
func (s *policyStore) Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	res, err := s.putRaw(ctx, in)
	return res, blobstore.Mark(err)
}

// Head answers as the client does: errors carry their fault kind.
func (s *policyStore) Head(ctx context.Context, key string) (blobstore.HeadResult, error) {
	res, err := s.headRaw(ctx, key)
	return res, blobstore.Mark(err)
}

// ProbeWrite answers as the client does: errors carry their fault kind.
func (s *policyStore) ProbeWrite(ctx context.Context, key string) error {
	return blobstore.Mark(s.probewriteRaw(ctx, key))
}

// ProbeWrite answers as the client does: errors carry their fault kind.
func (s *gatedStore) ProbeWrite(ctx context.Context, key string) error {
	return blobstore.Mark(s.probewriteRaw(ctx, key))
}
