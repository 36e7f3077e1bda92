package bus_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
)

// TestTextThroughJetStream sends key headers through a real server and reads them back as a
// stage does: every value must come back byte for byte (nats.go drops a value's leading blanks,
// so read as a plain header " x" would become the key "x").
func TestTextThroughJetStream(t *testing.T) {
	js, n := bustest.Job(t)
	ctx := context.Background()
	s, err := js.Stream(ctx, n.Blobs)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"x", " x", "  x", "\tx", "x ", " x ", "a b", "a\nb", "a\r\nb", "%20x", "100%.jpg",
		"é", "\u00a0x", "x\u3000", ",", "Ferry-Key"} {
		m := nats.NewMsg(n.BlobsSubject)
		bus.SetText(m.Header, bus.HdrKey, v)
		bus.SetText(m.Header, bus.HdrS3Key, "p/"+v)
		bus.SetText(m.Header, bus.HdrS3Key, v) // set again: the mark follows the last value
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		raw, err := s.GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		copied := nats.Header{}
		bus.Carry(copied, raw.Header)
		for _, name := range []string{bus.HdrKey, bus.HdrS3Key} {
			if got, err := bus.Text(raw.Header, name); err != nil || got != v {
				t.Errorf("%s %q read back as %q (%v); headers %q", name, v, got, err, raw.Header)
			}
		}
		if got, err := bus.Text(copied, bus.HdrKey); err != nil || got != v {
			t.Errorf("carried %s %q read back as %q (%v); headers %q", bus.HdrKey, v, got, err, copied)
		}
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    nats.Header
		want string
		err  bool
	}{
		{"older ferry, never escaped", nats.Header{bus.HdrKey: {"100%20x"}}, "100%20x", false},
		{"escaped", nats.Header{bus.HdrKey: {"%20x"}, bus.HdrEscaped: {"Ferry-S3-Key,Ferry-Key"}}, " x", false},
		{"another header escaped", nats.Header{bus.HdrKey: {"%20x"}, bus.HdrEscaped: {bus.HdrS3Key}}, "%20x", false},
		{"damaged escape", nats.Header{bus.HdrKey: {"%zz"}, bus.HdrEscaped: {bus.HdrKey}}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bus.Text(tc.h, bus.HdrKey)
			if got != tc.want || (err != nil) != tc.err {
				t.Errorf("Text = %q, %v; want %q, error %v", got, err, tc.want, tc.err)
			}
		})
	}
	// A plain value set over an escaped one drops the mark.
	h := nats.Header{}
	bus.SetText(h, bus.HdrKey, " x")
	bus.SetText(h, bus.HdrKey, "x")
	if h.Get(bus.HdrEscaped) != "" {
		t.Errorf("mark left behind: %q", h)
	}
}
