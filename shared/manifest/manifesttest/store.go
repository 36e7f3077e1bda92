// Package manifesttest is a bucket in memory for the tests of the manifest drain and its readers:
// S3's create-if-absent, listing in key order. The integration tests run the same against
// versitygw.
package manifesttest

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-migrate/ferry/shared/blobstore"
)

// Store is a bucket in memory (a manifest.Store).
type Store struct {
	mu   sync.Mutex
	objs map[string][]byte
}

// New is an empty Store.
func New() *Store { return &Store{objs: map[string][]byte{}} }

// Bucket is the bucket's name, "mem".
func (m *Store) Bucket() string { return "mem" }

// Put stores in.Body at in.Key; with IfAbsent an existing object is left and ErrExists returned.
func (m *Store) Put(_ context.Context, in blobstore.PutInput) (blobstore.PutResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[in.Key]; ok && in.IfAbsent {
		return blobstore.PutResult{}, blobstore.ErrExists
	}
	m.objs[in.Key] = bytes.Clone(in.Body)
	return blobstore.PutResult{}, nil
}

// Get is the object at key, or ErrNotFound.
func (m *Store) Get(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	if !ok {
		return nil, blobstore.ErrNotFound
	}
	return b, nil
}

// ListObjects calls fn for each object under prefix with after < key <= upTo, in key order.
func (m *Store) ListObjects(_ context.Context, prefix, after, upTo string, fn func(blobstore.Object) error) error {
	m.mu.Lock()
	var objs []blobstore.Object
	for k, b := range m.objs {
		if strings.HasPrefix(k, prefix) && k > after && (upTo == "" || k <= upTo) {
			objs = append(objs, blobstore.Object{Key: k, Size: int64(len(b)), LastModified: time.Now()})
		}
	}
	m.mu.Unlock()
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	for _, o := range objs {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// Set writes an object as someone else would: unconditionally, around the drain.
func (m *Store) Set(key string, body []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = bytes.Clone(body)
}

// Object is the object at key (nil if none).
func (m *Store) Object(key string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.objs[key]
}

// Delete removes the objects under prefix, as someone cleaning up the bucket would.
func (m *Store) Delete(prefix string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.objs {
		if strings.HasPrefix(k, prefix) {
			delete(m.objs, k)
		}
	}
}
