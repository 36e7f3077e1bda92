package uploader

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/stage"
)

// fakeStore keeps objects in a map; putErr, when set, fails every Put.
type fakeStore struct {
	objects  map[string][]byte
	owners   map[string]string // ferry-source-key metadata
	legacy   map[string]string // ferry-key metadata, of objects an older ferry wrote
	puts     int
	putErr   error
	headErr  error // every Head fails with this
	probeErr error // every ProbeWrite fails with this
	probes   int
	lastCRC  string           // PutInput.CRC32C of the last Put
	wts      map[string]int64 // ferry-writetime metadata; nil: none yet
	ifMatch  []string         // PutInput.IfMatch of every Put that had one
	gets     int              // GetIfMatch calls
	// beforeGet, if set, runs at the start of every GetIfMatch: another writer racing this one.
	beforeGet func()
	// beforePut, if set, runs at the start of every Put: another writer racing this one.
	beforePut func(in blobstore.PutInput)
}

func etagOf(b []byte) string {
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

func (f *fakeStore) probewriteRaw(context.Context, string) error {
	f.probes++
	return f.probeErr
}

func (f *fakeStore) putRaw(_ context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	f.puts++
	f.lastCRC = in.CRC32C
	if f.beforePut != nil {
		f.beforePut(in)
	}
	if f.putErr != nil {
		return blobstore.PutResult{}, f.putErr
	}
	old, ok := f.objects[in.Key]
	if ok && in.IfAbsent {
		return blobstore.PutResult{}, blobstore.ErrExists
	}
	if in.IfMatch != "" {
		f.ifMatch = append(f.ifMatch, in.IfMatch)
		if !ok || etagOf(old) != in.IfMatch {
			return blobstore.PutResult{}, fmt.Errorf("put %s: %w", in.Key, blobstore.ErrChanged)
		}
	}
	f.objects[in.Key] = bytes.Clone(in.Body)
	f.owners[in.Key] = in.Metadata[blobstore.OwnerMeta]
	delete(f.legacy, in.Key)
	if f.wts == nil {
		f.wts = map[string]int64{}
	}
	f.wts[in.Key], _ = strconv.ParseInt(in.Metadata[blobstore.WriteTimeMeta], 10, 64)
	return blobstore.PutResult{ETag: etagOf(in.Body)}, nil
}

func (f *fakeStore) headRaw(_ context.Context, key string) (blobstore.HeadResult, error) {
	if f.headErr != nil {
		return blobstore.HeadResult{}, f.headErr
	}
	b, ok := f.objects[key]
	if !ok {
		return blobstore.HeadResult{}, blobstore.ErrNotFound
	}
	meta := map[string]string{}
	if o, ok := f.owners[key]; ok {
		meta[blobstore.OwnerMeta] = o
	}
	if o, ok := f.legacy[key]; ok {
		meta[blobstore.LegacyOwnerMeta] = o
	}
	if wt := f.wts[key]; wt > 0 {
		meta[blobstore.WriteTimeMeta] = blobstore.WriteTimeValue(wt)
	}
	return blobstore.HeadResult{Key: key, Size: int64(len(b)), ETag: etagOf(b), Metadata: meta, WriteTime: f.wts[key]}, nil
}

// blobMsg publishes a BLOBS message for body and returns it as the uploader's consumer delivers it.
func blobMsg(t *testing.T, js jetstream.JetStream, n bus.Names, key string, body []byte, object string, mutate func(nats.Header)) jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	m := nats.NewMsg(n.BlobsSubject)
	sum := md5.Sum(body)
	m.Header.Set(bus.HdrID, bus.KeyID(n.Job, key))
	m.Header.Set(bus.HdrKey, key)
	m.Header.Set(bus.HdrS3Key, "p/"+key)
	m.Header.Set(bus.HdrSize, strconv.Itoa(len(body)))
	m.Header.Set(bus.HdrMD5, hex.EncodeToString(sum[:]))
	m.Header.Set(bus.HdrCRC32C, strconv.FormatUint(uint64(crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli))), 10))
	if object != "" {
		m.Header.Set(bus.HdrObject, object)
	} else {
		m.Data = body
	}
	if mutate != nil {
		mutate(m.Header)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, n.Blobs, n.Uploader)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestHandle(t *testing.T) {
	body := []byte("the blob")
	accessDenied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}
	slowDown := &smithy.GenericAPIError{Code: "SlowDown", Message: "reduce your request rate"}
	badKey := &smithy.GenericAPIError{Code: "InvalidAccessKeyId", Message: "The AWS Access Key Id you provided does not exist in our records."}
	forbidden := &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 403}}, Err: errors.New("forbidden")}
	badDigest := &smithy.GenericAPIError{Code: "BadDigest", Message: "The Content-MD5 you specified did not match what we received."}
	otherMD5 := func(h nats.Header) { s := md5.Sum([]byte("other bytes")); h.Set(bus.HdrMD5, hex.EncodeToString(s[:])) }
	tests := []struct {
		name         string
		object       bool   // the blob travels through the object store
		objectGone   bool   // ... and is gone from it
		inS3         bool   // S3 already holds the object
		inS3As       string // ... written by this source key, with other bytes
		putErr       error  // every Put fails with this
		headErr      error  // every Head fails with this
		probeErr     error  // every write probe fails with this
		mutate       func(nats.Header)
		wantUploaded bool
		wantPuts     int
		wantReason   string // permanent, with this reason
		wantFatal    bool
		wantErr      bool // transient
	}{
		{name: "inline blob", wantUploaded: true, wantPuts: 1},
		{name: "object store blob", object: true, wantUploaded: true, wantPuts: 1},
		{name: "object gone but in S3: done without a PUT", object: true, objectGone: true, inS3: true, wantUploaded: true},
		{name: "object gone and not in S3", object: true, objectGone: true, wantReason: bus.ReasonSourceError},
		{name: "object gone and S3 does not answer: retried, not dead-lettered", object: true, objectGone: true, headErr: slowDown, wantErr: true},
		{name: "same key, same bytes already in S3: no overwrite", inS3: true, wantUploaded: true, wantPuts: 1},
		{name: "same key, new bytes: overwritten", inS3As: "k1", wantUploaded: true, wantPuts: 2},
		{name: "another key's object is never overwritten", inS3As: "other", wantReason: bus.ReasonUploadError, wantPuts: 1},
		{name: "access denied on this object, others writable: dead-lettered", putErr: accessDenied, wantReason: bus.ReasonUploadError, wantPuts: 1},
		{name: "access denied everywhere: stops the uploader", putErr: accessDenied, probeErr: accessDenied, wantFatal: true, wantPuts: 1},
		{name: "bare 403 everywhere: stops the uploader", putErr: forbidden, probeErr: forbidden, wantFatal: true, wantPuts: 1},
		{name: "access denied, probe unanswered: retried", putErr: accessDenied, probeErr: slowDown, wantErr: true, wantPuts: 1},
		{name: "wrong credentials stop the uploader without a probe", putErr: badKey, wantFatal: true, wantPuts: 1},
		{name: "malformed crc32c", mutate: func(h nats.Header) { h.Set(bus.HdrCRC32C, "x") }, wantReason: bus.ReasonUploadError},
		{name: "slow down is retried", putErr: slowDown, wantErr: true, wantPuts: 1},
		{name: "size header disagrees with the body", mutate: func(h nats.Header) { h.Set(bus.HdrSize, "3") }, wantReason: bus.ReasonUploadError},
		{name: "malformed md5", mutate: func(h nats.Header) { h.Set(bus.HdrMD5, "zz") }, wantReason: bus.ReasonUploadError},
		// BadDigest: the uploader hashes the body to tell damage on the way from a damaged message.
		{name: "bad digest, body matches its md5: damaged on the way, retried", putErr: badDigest, wantErr: true, wantPuts: 1},
		{name: "bad digest, body does not match its md5: dead-lettered at once", putErr: badDigest, mutate: otherMD5, wantReason: bus.ReasonUploadError, wantPuts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, n := bustest.Job(t)
			ctx := context.Background()
			objects, err := js.ObjectStore(ctx, n.Objects)
			if err != nil {
				t.Fatal(err)
			}
			store := &fakeStore{objects: map[string][]byte{}, owners: map[string]string{}, putErr: tt.putErr, headErr: tt.headErr, probeErr: tt.probeErr}
			if tt.inS3 {
				store.objects["p/k1"], store.owners["p/k1"] = body, "k1"
			}
			if tt.inS3As != "" {
				store.objects["p/k1"], store.owners["p/k1"] = []byte("older bytes"), tt.inS3As
			}
			object := ""
			if tt.object {
				object = "obj1"
				if !tt.objectGone {
					if _, err := objects.PutBytes(ctx, object, body); err != nil {
						t.Fatal(err)
					}
				}
			}
			msg := blobMsg(t, js, n, "k1", body, object, tt.mutate)
			u := &Uploader{Names: n, JS: js, Objects: objects, Store: store, PartSize: 16 << 20}
			err = stage.Once(ctx, js, u.Handle, msg)
			reason, permanent := stage.IsPermanent(err)
			switch {
			case tt.wantReason != "":
				if !permanent || reason != tt.wantReason {
					t.Fatalf("Handle = %v; want permanent %s", err, tt.wantReason)
				}
			case tt.wantFatal:
				if !stage.IsFatal(err) {
					t.Fatalf("Handle = %v; want fatal", err)
				}
			case tt.wantErr:
				if err == nil || permanent || stage.IsFatal(err) {
					t.Fatalf("Handle = %v; want a transient error", err)
				}
			default:
				if err != nil {
					t.Fatalf("Handle: %v", err)
				}
			}
			if got := bustest.Msgs(t, js, n.Uploaded); (got == 1) != tt.wantUploaded {
				t.Errorf("UPLOADED holds %d messages, want uploaded=%v", got, tt.wantUploaded)
			}
			if store.puts != tt.wantPuts {
				t.Errorf("PUTs = %d, want %d", store.puts, tt.wantPuts)
			}
			if tt.wantUploaded && !bytes.Equal(store.objects["p/k1"], body) {
				t.Errorf("S3 holds %q, want %q", store.objects["p/k1"], body)
			}
			if tt.object && !tt.objectGone && tt.wantUploaded {
				if _, err := objects.GetInfo(ctx, object); !errors.Is(err, jetstream.ErrObjectNotFound) {
					t.Errorf("object-store copy not deleted after upload: %v", err)
				}
			}
		})
	}
}

// The CRC32C the fetcher computed from the source goes to S3 with the bytes and on to UPLOADED.
func TestSourceCRCTravels(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	store := &fakeStore{objects: map[string][]byte{}, owners: map[string]string{}}
	u := &Uploader{Names: n, JS: js, Store: store, PartSize: 16 << 20}
	body := []byte("the blob")
	if err := stage.Once(ctx, js, u.Handle, blobMsg(t, js, n, "k1", body, "", nil)); err != nil {
		t.Fatal(err)
	}
	if store.lastCRC != blobstore.CRC32C(body) {
		t.Errorf("Put got CRC32C %q, want the source's %q", store.lastCRC, blobstore.CRC32C(body))
	}
	st, err := js.Stream(ctx, n.Uploaded)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, n.UploadedSubject)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(bus.HdrCRC32C); got != strconv.FormatUint(uint64(crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli))), 10) {
		t.Errorf("UPLOADED %s = %q", bus.HdrCRC32C, got)
	}
}

// Put answers as the client does: errors carry their fault kind.
func (f *fakeStore) Put(ctx context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	res, err := f.putRaw(ctx, in)
	return res, blobstore.Mark(err)
}

// Head answers as the client does: errors carry their fault kind.
func (f *fakeStore) Head(ctx context.Context, key string) (blobstore.HeadResult, error) {
	res, err := f.headRaw(ctx, key)
	return res, blobstore.Mark(err)
}

// GetIfMatch answers as the client does: the object at etag, or ErrChanged.
func (f *fakeStore) GetIfMatch(_ context.Context, key, etag string) ([]byte, error) {
	f.gets++
	if f.beforeGet != nil {
		f.beforeGet()
	}
	b, ok := f.objects[key]
	switch {
	case !ok:
		return nil, blobstore.Mark(blobstore.ErrNotFound)
	case etagOf(b) != etag:
		return nil, blobstore.Mark(fmt.Errorf("get %s: %w", key, blobstore.ErrChanged))
	}
	return bytes.Clone(b), nil
}

// ProbeWrite answers as the client does: errors carry their fault kind.
func (f *fakeStore) ProbeWrite(ctx context.Context, key string) error {
	return blobstore.Mark(f.probewriteRaw(ctx, key))
}
