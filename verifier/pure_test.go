package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"hash/crc32"
	"testing"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestHandleWithoutNATS: the verifier is a function of its input. No server: an UPLOADED record
// in, its DONE entry out (the key as body, the record without the object-store name).
func TestHandleWithoutNATS(t *testing.T) {
	body := []byte("the blob")
	sum := md5.Sum(body)
	head := blobstore.HeadResult{Key: "p/ k", Size: int64(len(body)), CRC32C: blobstore.CRC32C(body),
		Metadata: map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:])}}
	v := &Verifier{Names: bus.For("t"), Store: fakeStore{head: head}}
	rec := bus.Record{ID: "id1", Key: " k", Origin: "list:1", S3Key: "p/ k", Size: int64(len(body)), MD5: sum[:],
		CRC32C: crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)), HasCRC32C: true, Object: "id1", ETag: "e"}
	out, err := v.Handle(context.Background(), stage.Msg{Record: rec})
	if err != nil {
		t.Fatal(err)
	}
	want := rec
	want.Object = ""
	if out.Subject != v.Names.DoneSubject || out.Stream != v.Names.Done || out.ID != bus.MsgID("done", "id1") ||
		string(out.Body) != " k" || out.Record.Object != "" || out.Record.Key != want.Key || out.Record.ETag != "e" {
		t.Errorf("output %+v", out)
	}

	rec.MD5 = nil
	if _, err := v.Handle(context.Background(), stage.Msg{Record: rec}); err == nil {
		t.Error("a record without its MD5 was verified")
	} else if reason, ok := stage.IsPermanent(err); !ok || reason != bus.ReasonVerifyMismatch {
		t.Errorf("a record without its MD5: %v, want a dead letter verify_mismatch", err)
	}
}
