package uploader

import (
	"bytes"
	"context"
	"testing"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestUploaderTrustsNoHeader: the uploader does not write where a BLOBS message says: it maps
// Ferry-Key with the job's key rules itself, and a message whose S3 key differs (hand-published,
// or from a fetcher with other rules) is dead-lettered without a PUT. An object ferry did not
// write (no owner record) that holds other bytes is left alone unless the job file says
// destination.replace_unowned.
func TestUploaderTrustsNoHeader(t *testing.T) {
	rules, err := keyrules.Compile(config.KeyRules{Template: "p/{key}", MaxLength: 1024})
	if err != nil {
		t.Fatal(err)
	}
	foreign := []byte("an object another tool wrote")
	for _, tc := range []struct {
		name           string
		key, s3Key     string
		existing       []byte // at p/a, without an owner record
		replaceUnowned bool
		wantReason     string // "" for success
		wantPuts       int
		wantS3         []byte // p/a afterwards
	}{
		{name: "the rules' S3 key", key: "a", s3Key: "p/a", wantPuts: 1, wantS3: []byte("b")},
		{name: "path traversal", key: "a", s3Key: "a/../../../other-prefix/x", wantReason: bus.ReasonUploadError},
		{name: "dot segments", key: "b/c/d", s3Key: "p/b/./c//d", wantReason: bus.ReasonUploadError},
		{name: "another key's S3 key", key: "b", s3Key: "p/a", wantReason: bus.ReasonUploadError},
		{name: "no S3 key in the rules' sense", key: "a\x00", s3Key: "p/a\x00", wantReason: bus.ReasonUploadError},
		{name: "unowned object, other bytes: kept", key: "a", s3Key: "p/a", existing: foreign,
			wantReason: bus.ReasonUploadError, wantPuts: 1, wantS3: foreign},
		{name: "unowned object, replace_unowned", key: "a", s3Key: "p/a", existing: foreign, replaceUnowned: true,
			wantPuts: 2, wantS3: []byte("b")},
		{name: "unowned object, the same bytes", key: "a", s3Key: "p/a", existing: []byte("b"), wantPuts: 1, wantS3: []byte("b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			store := &fakeStore{objects: map[string][]byte{}, owners: map[string]string{}}
			if tc.existing != nil {
				store.objects["p/a"] = tc.existing
			}
			u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20, Rules: rules, ReplaceUnowned: tc.replaceUnowned}
			err := stage.Once(context.Background(), js, u.Handle, keyedBlobMsg(t, js, n, tc.key, tc.s3Key, []byte("b")))
			reason, permanent := stage.IsPermanent(err)
			switch {
			case tc.wantReason == "" && err != nil:
				t.Fatalf("Handle = %v, want success", err)
			case tc.wantReason != "" && (!permanent || reason != tc.wantReason):
				t.Fatalf("Handle = %v, want a dead letter %s", err, tc.wantReason)
			}
			if store.puts != tc.wantPuts {
				t.Errorf("%d PUTs, want %d (objects %q)", store.puts, tc.wantPuts, keysOf(store.objects))
			}
			if got := store.objects["p/a"]; tc.wantS3 != nil && !bytes.Equal(got, tc.wantS3) {
				t.Errorf("p/a holds %q, want %q", got, tc.wantS3)
			}
			if tc.wantReason != "" && tc.existing == nil && len(store.objects) != 0 {
				t.Errorf("objects written: %q", keysOf(store.objects))
			}
		})
	}
	_ = blobstore.OwnerMeta
}
