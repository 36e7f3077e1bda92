package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/nats-io/nats.go"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

var (
	headForbidden = &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 403}}, Err: errors.New("forbidden")}
	headDenied    = &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}
)

// policyStore answers HEAD by a read policy: refused keys get refuse, keys in objects their
// head, others 404 (or refuse when noList: S3 answers 403 for a missing key to a caller without
// s3:ListBucket). It records the keys asked.
type policyStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	refused func(key string) bool
	refuse  error
	noList  bool
	asked   []string
}

func (s *policyStore) headRaw(_ context.Context, key string) (blobstore.HeadResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, key)
	body, ok := s.objects[key]
	switch {
	case s.refused(key), !ok && s.noList:
		return blobstore.HeadResult{}, s.refuse
	case !ok:
		return blobstore.HeadResult{}, blobstore.ErrNotFound
	}
	sum := md5.Sum(body)
	return blobstore.HeadResult{Key: key, Size: int64(len(body)), ETag: hex.EncodeToString(sum[:]),
		Metadata: map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:])}, CRC32C: blobstore.CRC32C(body)}, nil
}

func (s *policyStore) getRaw(context.Context, string) ([]byte, error) {
	return nil, errors.New("unused")
}

func wantRefusedOnItsOwn(t *testing.T, what string, err error) {
	t.Helper()
	reason, permanent := stage.IsPermanent(err)
	if !permanent || reason != bus.ReasonVerifyMissing || !strings.Contains(err.Error(), "refuses HEAD of this object") {
		t.Errorf("%s: Handle = %v (fatal %v); want dead-lettered verify_missing, refused on its own", what, err, stage.IsFatal(err))
	}
}

// HEAD refused for one object (a deny on its prefix, an SSE-C object, a KMS key the verifier may
// not use) while others answer: the key is dead-lettered and the verifier goes on. Before the
// fix: Fatal, and every restart got the same message first: the job never ended.
func TestRefusedHeadOneObject(t *testing.T) {
	for _, refuse := range []error{headForbidden, headDenied} {
		js, n := bustest.Job(t)
		ctx := context.Background()
		store := &policyStore{objects: map[string][]byte{"p/ok": []byte("b"), "p/locked": []byte("b"), "p/next": []byte("b")},
			refused: func(k string) bool { return k == "p/locked" }, refuse: refuse}
		v := &Verifier{Names: n, JS: js, Store: store}
		if err := stage.Once(ctx, js, v.Handle, uploadedMsg(t, js, n, "ok", "p/ok", []byte("b"))); err != nil {
			t.Fatal(err)
		}
		wantRefusedOnItsOwn(t, "p/locked ("+refuse.Error()+")", stage.Once(ctx, js, v.Handle, uploadedMsg(t, js, n, "locked", "p/locked", []byte("b"))))
		if err := stage.Once(ctx, js, v.Handle, uploadedMsg(t, js, n, "next", "p/next", []byte("b"))); err != nil {
			t.Errorf("the next key: %v", err)
		}
		if got := store.asked; len(got) != 4 || got[2] != "p/ok" {
			t.Errorf("HEADs %q; want the read probe to HEAD p/ok, the last object verified", got)
		}
	}
}

// Every HEAD refused (a revoked policy, a bare 403 from a wrong secret): the read probe is refused
// too and the verifier stops, as before.
func TestRefusedHeadEveryObject(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	revoked := false
	store := &policyStore{objects: map[string][]byte{"p/ok": []byte("b"), "p/k": []byte("b")},
		refused: func(string) bool { return revoked }, refuse: headForbidden}
	v := &Verifier{Names: n, JS: js, Store: store}
	if err := stage.Once(ctx, js, v.Handle, uploadedMsg(t, js, n, "ok", "p/ok", []byte("b"))); err != nil {
		t.Fatal(err)
	}
	revoked = true
	err := stage.Once(ctx, js, v.Handle, uploadedMsg(t, js, n, "k", "p/k", []byte("b")))
	if !stage.IsFatal(err) || !strings.Contains(err.Error(), `key "k"`) {
		t.Errorf("every HEAD refused: Handle = %v; want the verifier stopped, naming the key", err)
	}
}

// The refused object is the first the process sees (a restart: the same message comes first).
// Without a verified key the probe HEADs a key that does not exist: a 404 proves the verifier may
// read. Without s3:ListBucket S3 answers 403 for it, so the verifier asks about the job's last
// verified key in DONE; with neither, it stops.
func TestRefusedHeadFirstObject(t *testing.T) {
	t.Run("404 answered", func(t *testing.T) {
		js, n := bustest.Job(t)
		store := &policyStore{objects: map[string][]byte{}, refused: func(k string) bool { return k == "p/locked" }, refuse: headDenied}
		v := &Verifier{Names: n, JS: js, Store: store}
		wantRefusedOnItsOwn(t, "first key", stage.Once(context.Background(), js, v.Handle, uploadedMsg(t, js, n, "locked", "p/locked", []byte("b"))))
	})
	t.Run("no ListBucket, a verified key in DONE", func(t *testing.T) {
		js, n := bustest.Job(t)
		ctx := context.Background()
		done := nats.NewMsg(n.DoneSubject)
		done.Data = []byte("earlier")
		done.Header.Set(bus.HdrS3Key, "p/earlier")
		if _, err := js.PublishMsg(ctx, done); err != nil {
			t.Fatal(err)
		}
		store := &policyStore{objects: map[string][]byte{"p/earlier": []byte("b")}, noList: true,
			refused: func(k string) bool { return k == "p/locked" }, refuse: headForbidden}
		v := &Verifier{Names: n, JS: js, Store: store}
		wantRefusedOnItsOwn(t, "first key", stage.Once(ctx, js, v.Handle, uploadedMsg(t, js, n, "locked", "p/locked", []byte("b"))))
	})
	t.Run("no ListBucket, nothing verified", func(t *testing.T) {
		js, n := bustest.Job(t)
		store := &policyStore{objects: map[string][]byte{}, noList: true,
			refused: func(k string) bool { return k == "p/locked" }, refuse: headForbidden}
		v := &Verifier{Names: n, JS: js, Store: store}
		if err := stage.Once(context.Background(), js, v.Handle, uploadedMsg(t, js, n, "locked", "p/locked", []byte("b"))); !stage.IsFatal(err) {
			t.Errorf("no read proven anywhere: Handle = %v; want the verifier stopped", err)
		}
	})
}

// Head answers as the client does: errors carry their fault kind.
func (s *policyStore) Head(ctx context.Context, key string) (blobstore.HeadResult, error) {
	res, err := s.headRaw(ctx, key)
	return res, blobstore.Mark(err)
}

// GetIfMatch answers as the client does (whatever the ETag: the object has one version): errors carry their fault kind.
func (s *policyStore) GetIfMatch(ctx context.Context, key, _ string) ([]byte, error) {
	res, err := s.getRaw(ctx, key)
	return res, blobstore.Mark(err)
}
