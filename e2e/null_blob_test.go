//go:build integration

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// TestNullBlob: a NULL blob is "not found at this target", never an empty object. Through the
// four services on the local stack's two read targets (dc1: ferry_demo.blobs, dc2-old:
// ferry_demo.blobs_old):
//   - NULL in dc1's table, bytes in dc2-old's: verified with dc2-old's bytes, served by dc2-old;
//   - NULL in dc1's table, nothing in dc2-old's: dead-lettered not_found;
//   - a row of dc1's table whose blob column was never written: dead-lettered not_found;
//   - 0 bytes in dc1's table: verified as a 0-byte object.
func TestNullBlob(t *testing.T) {
	job := fmt.Sprint(time.Now().UnixNano() % 1e9)
	key := func(name string) string { return "nullblob/" + job + "/" + name + ".bin" }
	nullFallback, nullOnly, unwritten, empty := key("null-fallback"), key("null-only"), key("unwritten"), key("empty")
	fallbackBytes := []byte("the bytes dc2-old holds for " + nullFallback)

	writeRows(t, 0, "INSERT INTO %[1]s (%[2]s, %[3]s) VALUES (?, null)", nullFallback, nullOnly)
	writeRows(t, 0, "INSERT INTO %[1]s (%[2]s) VALUES (?)", unwritten)
	writeRows(t, 0, "INSERT INTO %[1]s (%[2]s, %[3]s) VALUES (?, ?)", empty, []byte{})
	writeRows(t, 1, "INSERT INTO %[1]s (%[2]s, %[3]s) VALUES (?, ?)", nullFallback, fallbackBytes)

	r := newRig(t, "NULL blobs and a 0-byte blob", "nullblob", rigOptions{})
	r.must("setup")
	c := r.crew()
	for _, s := range []string{"fetcher", "uploader", "verifier"} {
		c.add(s, 1, s, "--concurrency", "4")
	}
	c.add("producer", 1, "producer", "--keys", r.writeKeys("keys.txt", []string{nullFallback, nullOnly, unwritten, empty}))
	c.settle(3 * time.Minute)
	c.stop()
	r.reconcile(plan{
		want: map[string]string{
			nullFallback: outcomeVerified, empty: outcomeVerified,
			nullOnly: "fetcher/" + bus.ReasonNotFound, unwritten: "fetcher/" + bus.ReasonNotFound,
		},
		content: func(k string) []byte {
			if k == nullFallback {
				return fallbackBytes
			}
			return []byte{}
		},
	})
	for _, e := range r.readDone() {
		want := map[string]string{nullFallback: "dc2-old", empty: "dc1"}[e.Key]
		if got := e.Header.Get(bus.HdrSource); got != want {
			t.Errorf("%s: served by %q, want %q", e.Key, got, want)
		}
		if e.Key == empty && e.Header.Get(bus.HdrSize) != "0" {
			t.Errorf("%s: verified size %q, want 0", e.Key, e.Header.Get(bus.HdrSize))
		}
	}
}
