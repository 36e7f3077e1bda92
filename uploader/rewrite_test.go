package uploader

import (
	"bytes"
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// TestRewrites: of two versions of one key, the newest writetime wins whatever order their
// messages come in; a replacement is conditional on the ETag HEAD saw; a message older than the
// object never overwrites it and is passed on (superseded); the two-keys-one-object guard stays.
func TestRewrites(t *testing.T) {
	// On a writetime tie the greater bytes win: objBytes > msgBytes > racer ("o" > "m" > "a").
	msgBytes, objBytes, racer := []byte("the message's bytes"), []byte("the object's bytes"), []byte("a racing writer's bytes")
	smaller := []byte("the lesser bytes")
	tests := []struct {
		name       string
		objOwner   string // the object's ferry-source-key; "k1" is the message's key
		objWT      int64  // the object's writetime; 0: no ferry-writetime (an older ferry)
		sameBytes  bool   // the object holds the message's bytes
		msgWT      int64  // the message's writetime; 0: unknown
		object     string // the blob travels through the object store under this name, gone from it
		race       bool   // another writer replaces the object between HEAD and the replacement
		raceGet    bool   // another writer replaces the object between HEAD and the tie's GET
		objSmaller bool   // the object holds smaller bytes than the message's
		wantGets   int    // GETs to settle a writetime tie
		wantBytes  []byte // what S3 holds afterwards
		wantWT     int64
		wantPuts   int
		wantMatch  bool // the replacement was conditional on the HEAD's ETag
		wantSuper  float64
		wantReason string // dead-lettered
		wantRetry  bool   // transient error, nothing passed on
	}{
		{name: "newer message replaces the object", objOwner: "k1", objWT: 1, msgWT: 2,
			wantBytes: msgBytes, wantWT: 2, wantPuts: 2, wantMatch: true},
		{name: "object without a writetime (older ferry) counts as older", objOwner: "k1", msgWT: 2,
			wantBytes: msgBytes, wantWT: 2, wantPuts: 2, wantMatch: true},
		{name: "message of unknown writetime replaces, as before", objOwner: "k1", objWT: 5,
			wantBytes: msgBytes, wantWT: 0, wantPuts: 2, wantMatch: true},
		{name: "stale message never overwrites: passed on, superseded", objOwner: "k1", objWT: 2, msgWT: 1,
			wantBytes: objBytes, wantWT: 2, wantPuts: 1, wantSuper: 1},
		{name: "same writetime, greater bytes held: kept, superseded", objOwner: "k1", objWT: 2, msgWT: 2,
			wantBytes: objBytes, wantWT: 2, wantPuts: 1, wantGets: 1, wantSuper: 1},
		{name: "same writetime, smaller bytes held: replaced at the HEAD's ETag", objOwner: "k1", objWT: 2, msgWT: 2, objSmaller: true,
			wantBytes: msgBytes, wantWT: 2, wantPuts: 2, wantGets: 1, wantMatch: true},
		{name: "same writetime, replaced before the GET: retried", objOwner: "k1", objWT: 2, msgWT: 2, objSmaller: true, raceGet: true,
			wantBytes: racer, wantWT: 2, wantPuts: 1, wantGets: 1, wantRetry: true},
		{name: "same writetime, replaced before the PUT: retried", objOwner: "k1", objWT: 2, msgWT: 2, objSmaller: true, race: true,
			wantBytes: racer, wantWT: 2, wantPuts: 2, wantGets: 1, wantMatch: true, wantRetry: true},
		{name: "same writetime, large blob gone from the object store: an earlier delivery settled it", objOwner: "k1", objWT: 2, msgWT: 2, object: "obj1",
			wantBytes: objBytes, wantWT: 2, wantSuper: 1},
		{name: "another key's object, same writetime: never overwritten", objOwner: "other", objWT: 2, msgWT: 2, objSmaller: true,
			wantBytes: smaller, wantWT: 2, wantPuts: 1, wantReason: bus.ReasonUploadError},
		{name: "same bytes rewritten later: the newer writetime is recorded", objOwner: "k1", objWT: 1, msgWT: 2, sameBytes: true,
			wantBytes: msgBytes, wantWT: 2, wantPuts: 2, wantMatch: true},
		{name: "same bytes, older message: nothing to do, not superseded", objOwner: "k1", objWT: 3, msgWT: 2, sameBytes: true,
			wantBytes: msgBytes, wantWT: 3, wantPuts: 1},
		{name: "replaced by another writer after HEAD: retried, the other's bytes kept", objOwner: "k1", objWT: 1, msgWT: 2, race: true,
			wantBytes: racer, wantWT: 1, wantPuts: 2, wantMatch: true, wantRetry: true},
		{name: "large blob gone from the object store, newer bytes in S3: superseded", objOwner: "k1", objWT: 3, msgWT: 2, object: "obj1",
			wantBytes: objBytes, wantWT: 3, wantSuper: 1},
		{name: "another key's object, older writetime: still never overwritten", objOwner: "other", objWT: 1, msgWT: 2,
			wantBytes: objBytes, wantWT: 1, wantPuts: 1, wantReason: bus.ReasonUploadError},
		{name: "another key's object of the same bytes: left as it is", objOwner: "other", objWT: 1, msgWT: 2, sameBytes: true,
			wantBytes: msgBytes, wantWT: 1, wantPuts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			ctx := context.Background()
			objects, err := js.ObjectStore(ctx, n.Objects)
			if err != nil {
				t.Fatal(err)
			}
			held := objBytes
			switch {
			case tt.sameBytes:
				held = msgBytes
			case tt.objSmaller:
				held = smaller
			}
			store := &fakeStore{objects: map[string][]byte{"p/k1": held}, owners: map[string]string{"p/k1": blobstore.OwnerValue(tt.objOwner)},
				wts: map[string]int64{"p/k1": tt.objWT}}
			if tt.race {
				store.beforePut = func(in blobstore.PutInput) {
					if in.IfMatch != "" {
						store.objects["p/k1"] = racer
					}
				}
			}
			if tt.raceGet {
				store.beforeGet = func() { store.objects["p/k1"] = racer }
			}
			reg := prometheus.NewRegistry()
			u := &Uploader{Names: n, JS: js, Objects: objects, Store: store, PartSize: 16 << 20}
			u.Register(reg)
			msg := blobMsg(t, js, n, "k1", msgBytes, tt.object, func(h nats.Header) {
				if tt.msgWT > 0 {
					h.Set(bus.HdrWriteTime, strconv.FormatInt(tt.msgWT, 10))
				}
			})
			err = stage.Once(ctx, js, u.Handle, msg)
			reason, permanent := stage.IsPermanent(err)
			switch {
			case tt.wantReason != "":
				if !permanent || reason != tt.wantReason {
					t.Fatalf("Handle = %v; want dead-lettered %s", err, tt.wantReason)
				}
			case tt.wantRetry:
				if err == nil || permanent || stage.IsFatal(err) {
					t.Fatalf("Handle = %v; want a transient error", err)
				}
			case err != nil:
				t.Fatalf("Handle: %v", err)
			}
			if got := bustest.Msgs(t, js, n.Uploaded); (got == 1) != (tt.wantReason == "" && !tt.wantRetry) {
				t.Errorf("UPLOADED holds %d messages", got)
			}
			if !bytes.Equal(store.objects["p/k1"], tt.wantBytes) || store.wts["p/k1"] != tt.wantWT {
				t.Errorf("S3 holds %q at writetime %d, want %q at %d", store.objects["p/k1"], store.wts["p/k1"], tt.wantBytes, tt.wantWT)
			}
			if store.puts != tt.wantPuts || store.gets != tt.wantGets {
				t.Errorf("PUTs = %d, GETs = %d; want %d, %d", store.puts, store.gets, tt.wantPuts, tt.wantGets)
			}
			if matched := len(store.ifMatch) == 1 && store.ifMatch[0] == etagOf(held); matched != tt.wantMatch {
				t.Errorf("If-Match of the PUTs %q, want the HEAD's ETag %s: %v", store.ifMatch, etagOf(held), tt.wantMatch)
			}
			var m dto.Metric
			if err := u.superseded.Write(&m); err != nil {
				t.Fatal(err)
			}
			if got := m.GetCounter().GetValue(); got != tt.wantSuper {
				t.Errorf("ferry_uploader_superseded_total = %v, want %v", got, tt.wantSuper)
			}
		})
	}
}
