package verifier

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"hash/crc32"
	"testing"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestVerifierTrustsNoHeader: a forged UPLOADED message does not make a DONE entry. The verifier
// maps Ferry-Key with the job's rules itself: a message naming another S3 key is
// verify_mismatch. The owner record does not decide: rules may map two keys to one object on
// purpose (t01x_1.jpg and t01x.jpg, one image), and the same bytes verify both.
func TestVerifierTrustsNoHeader(t *testing.T) {
	rules, err := keyrules.Compile(config.KeyRules{Template: "p/{key}", MaxLength: 1024})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("the blob")
	sum := md5.Sum(body)
	head := func(owner map[string]string) blobstore.HeadResult {
		meta := map[string]string{blobstore.MD5Meta: hex.EncodeToString(sum[:])}
		for k, v := range owner {
			meta[k] = v
		}
		return blobstore.HeadResult{Size: int64(len(body)), CRC32C: blobstore.CRC32C(body), Metadata: meta}
	}
	for _, tc := range []struct {
		name       string
		key, s3Key string
		owner      map[string]string
		wantReason string
	}{
		{"its own object", "a", "p/a", map[string]string{blobstore.OwnerMeta: "a"}, ""},
		{"an object ferry did not write, same bytes", "a", "p/a", nil, ""},
		{"an older ferry's record", "a", "p/a", map[string]string{blobstore.LegacyOwnerMeta: "a"}, ""},
		{"another key's S3 key", "a", "p/b", map[string]string{blobstore.OwnerMeta: "b"}, bus.ReasonVerifyMismatch},
		{"outside the job's prefix", "a", "other/a", nil, bus.ReasonVerifyMismatch},
		{"two keys the rules map to one object, the same bytes", "a", "p/a", map[string]string{blobstore.OwnerMeta: "b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &Verifier{Names: bus.For("t"), Store: fakeStore{head: head(tc.owner)}, Rules: rules}
			rec := bus.Record{ID: "id", Key: tc.key, S3Key: tc.s3Key, Size: int64(len(body)), MD5: sum[:],
				CRC32C: crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)), HasCRC32C: true}
			out, err := v.Handle(context.Background(), stage.Msg{Record: rec})
			if tc.wantReason == "" {
				if err != nil || out == nil {
					t.Fatalf("Handle = %v, %v; want a DONE entry", out, err)
				}
				return
			}
			if reason, ok := stage.IsPermanent(err); !ok || reason != tc.wantReason || out != nil {
				t.Errorf("Handle = %v, %v; want a dead letter %s", out, err, tc.wantReason)
			}
		})
	}
}
