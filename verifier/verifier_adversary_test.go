package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// rewrittenStore: the HEAD sees the message's own bytes; a newer rewrite of the key (a later
// writetime, uploaded by its own message) replaces the object before the deep check's GET, so
// S3 refuses a GET at the first HEAD's ETag, and later HEADs see the newer object.
type rewrittenStore struct {
	head, newerHead blobstore.HeadResult
	newer           []byte
	heads           int
}

func (s *rewrittenStore) Head(context.Context, string) (blobstore.HeadResult, error) {
	s.heads++
	if s.heads == 1 {
		return s.head, nil
	}
	return s.newerHead, nil
}
func (s *rewrittenStore) GetIfMatch(_ context.Context, key, etag string) ([]byte, error) {
	if etag != s.newerHead.ETag {
		return nil, blobstore.Mark(fmt.Errorf("get %s: %w", key, blobstore.ErrChanged))
	}
	return s.newer, nil
}

// TestAdversaryDeepCheckRacesRewrite: with --deep-sample on a live source, a rewrite landing
// between the HEAD (which matched) and the GET makes the deep check read the newer bytes: the
// message is dead-lettered verify_mismatch ("reads back with md5 ..."), a false failure of a key
// whose newest bytes are in S3, where the HEAD path would have called it superseded.
func TestAdversaryDeepCheckRacesRewrite(t *testing.T) {
	mine, newer := []byte("the message's bytes"), []byte("newer bytes of the key")
	sum := md5.Sum(mine)
	head := blobstore.HeadResult{Key: "p/k1", Size: int64(len(mine)), ETag: hex.EncodeToString(sum[:]), WriteTime: 10,
		Metadata: map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:]), blobstore.OwnerMeta: blobstore.OwnerValue("k1"),
			blobstore.WriteTimeMeta: blobstore.WriteTimeValue(10)}}
	nsum := md5.Sum(newer)
	newerHead := blobstore.HeadResult{Key: "p/k1", Size: int64(len(newer)), ETag: hex.EncodeToString(nsum[:]), WriteTime: 11,
		Metadata: map[string]string{blobstore.MD5Meta: hex.EncodeToString(nsum[:]), blobstore.OwnerMeta: blobstore.OwnerValue("k1"),
			blobstore.WriteTimeMeta: blobstore.WriteTimeValue(11)}}
	v := &Verifier{Names: bus.For("t"), Store: &rewrittenStore{head: head, newerHead: newerHead, newer: newer}, Sample: 1}
	rec := bus.Record{ID: "id1", Key: "k1", S3Key: "p/k1", Size: int64(len(mine)), MD5: sum[:], WriteTime: 10}
	out, err := v.Handle(context.Background(), stage.Msg{Record: rec})
	if reason, ok := stage.IsPermanent(err); ok {
		t.Errorf("dead-lettered %s (%v); want DONE (superseded after a fresh HEAD) or a retry", reason, err)
	}
	if err == nil && out.Record.Superseded != 11 {
		t.Errorf("DONE entry superseded by %d; want 11 (the rewrite's writetime)", out.Record.Superseded)
	}
}
