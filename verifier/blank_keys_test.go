package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// keyedStore answers per S3 key and records the keys asked.
type keyedStore struct {
	mu    sync.Mutex
	asked []string
	head  func(key string) (blobstore.HeadResult, error)
}

func (s *keyedStore) headRaw(_ context.Context, key string) (blobstore.HeadResult, error) {
	s.mu.Lock()
	s.asked = append(s.asked, key)
	s.mu.Unlock()
	return s.head(key)
}
func (s *keyedStore) getRaw(context.Context, string) ([]byte, error) {
	return nil, errors.New("unused")
}

func uploadedMsg(t *testing.T, js jetstream.JetStream, n bus.Names, key, s3Key string, body []byte) jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	sum := md5.Sum(body)
	m := nats.NewMsg(n.UploadedSubject)
	m.Header.Set(bus.HdrID, bus.KeyID(n.Job, key))
	bus.SetText(m.Header, bus.HdrKey, key)
	bus.SetText(m.Header, bus.HdrS3Key, s3Key)
	m.Header.Set(bus.HdrSize, strconv.Itoa(len(body)))
	m.Header.Set(bus.HdrMD5, hex.EncodeToString(sum[:]))
	m.Header.Set(bus.HdrCRC32C, strconv.FormatUint(uint64(crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli))), 10))
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, n.Uploaded, n.Verifier)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func okHead(key string, body []byte) blobstore.HeadResult {
	sum := md5.Sum(body)
	return blobstore.HeadResult{Key: key, Size: int64(len(body)), ETag: hex.EncodeToString(sum[:]),
		Metadata: map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:])}, CRC32C: blobstore.CRC32C(body)}
}

// TestVerifierBlankKey: key " x" (S3 key " x") travels in NATS headers, which
// trim it; the verifier HEADs "x" and records "x" in DONE: the proof names a key that may not
// exist in the source and never names " x".
func TestVerifierBlankKey(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	body := []byte("b")
	store := &keyedStore{head: func(key string) (blobstore.HeadResult, error) { return okHead(key, body), nil }}
	v := &Verifier{Names: n, JS: js, Store: store}
	if err := stage.Once(ctx, js, v.Handle, uploadedMsg(t, js, n, " x", " x", body)); err != nil {
		t.Fatal(err)
	}
	if len(store.asked) != 1 || store.asked[0] != " x" {
		t.Errorf("HEAD asked %q, want [\" x\"]", store.asked)
	}
	s, err := js.Stream(ctx, n.Done)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, n.DoneSubject)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != " x" {
		t.Errorf("DONE records key %q, want %q", m.Data, " x")
	}
}

// Head answers as the client does: errors carry their fault kind.
func (s *keyedStore) Head(ctx context.Context, key string) (blobstore.HeadResult, error) {
	res, err := s.headRaw(ctx, key)
	return res, blobstore.Mark(err)
}

// GetIfMatch answers as the client does (whatever the ETag: the object has one version): errors carry their fault kind.
func (s *keyedStore) GetIfMatch(ctx context.Context, key, _ string) ([]byte, error) {
	res, err := s.getRaw(ctx, key)
	return res, blobstore.Mark(err)
}
