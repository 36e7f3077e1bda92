package producer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/service"
)

// ackDropper is a TCP proxy between a NATS client and server that drops some of the PubAcks the
// server sends for one stream: the message is stored, but the client never hears so, as when a
// connection or a stream leader is lost between the store and the reply. Acks numbered from..to-1
// (counting from 0, in the order the server sends them) are dropped.
type ackDropper struct {
	target   string
	marker   []byte // the start of the stream's PubAck body
	from, to int64
	seen     atomic.Int64
	dropped  atomic.Int64
}

func (d *ackDropper) serve(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			srv, err := net.Dial("tcp", d.target)
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			open = append(open, client, srv)
			mu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); io.Copy(srv, client); srv.Close() }()
			go func() { defer conns.Done(); d.relay(client, srv); client.Close() }()
		}
	}()
	return "nats://" + ln.Addr().String()
}

// relay copies the server's protocol to the client, frame by frame, leaving out dropped PubAcks.
func (d *ackDropper) relay(dst io.Writer, src io.Reader) {
	br := bufio.NewReaderSize(src, 1<<20)
	bw := bufio.NewWriter(dst)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return
		}
		frame := line
		if f := strings.Fields(string(line)); len(f) > 0 && (f[0] == "MSG" || f[0] == "HMSG") {
			size, _ := strconv.Atoi(f[len(f)-1])
			body := make([]byte, size+2) // payload and CRLF
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			if f[0] == "MSG" && bytes.HasPrefix(body, d.marker) {
				if n := d.seen.Add(1) - 1; n >= d.from && n < d.to {
					d.dropped.Add(1)
					continue
				}
			}
			frame = append(line, body...)
		}
		if _, err := bw.Write(frame); err != nil {
			return
		}
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
	}
}

// TestRunLostPubAck: a PubAck that never arrives is waited for a bounded time, then the key is
// republished (the Nats-Msg-Id dedupes it), a checkpoint never passes a key whose PubAck was not
// received, and cancelling the run returns promptly.
func TestRunLostPubAck(t *testing.T) {
	const keys = 300
	var body strings.Builder
	for i := range keys {
		fmt.Fprintf(&body, "key-%04d\n", i)
	}
	file := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(file, []byte(body.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	const never = 1 << 62
	tests := []struct {
		name     string
		from, to int64         // KEYS PubAcks dropped
		cancel   time.Duration // cancel the run after this; 0: let it finish
		maxLine  int64         // the checkpoint's line is at most this
	}{
		{"lost PubAcks are republished", 0, 5, 0, keys},
		{"lost PubAcks in the middle of the list", 100, 110, 0, keys},
		{"every PubAck lost from key 50 on: cancel returns, checkpoint stays behind", 50, never, 1500 * time.Millisecond, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
				JetStream: true, StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			srv.Start()
			t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
			if !srv.ReadyForConnections(10 * time.Second) {
				t.Fatal("nats-server not ready")
			}
			n := bus.For("t")
			d := &ackDropper{target: srv.Addr().String(), marker: []byte(`{"stream":"` + n.Keys + `"`), from: tt.from, to: tt.to}
			nc, js, err := bus.Connect(context.Background(), d.serve(t), "test")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			if _, err := bus.Setup(context.Background(), js, n, bus.DefaultSettings(), true); err != nil {
				t.Fatal(err)
			}
			env := &service.Env{Names: n, JS: js, Log: slog.Default()}
			cfg := Config{Keys: *cli.NewStringSlice(file), InFlight: 16, HighWater: 1 << 40, ackTimeout: 300 * time.Millisecond}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				st  Stats
				err error
			}
			done := make(chan result, 1)
			go func() {
				st, err := Run(ctx, env, cfg)
				done <- result{st, err}
			}()
			var res result
			if tt.cancel > 0 {
				time.Sleep(tt.cancel)
				cancel()
				select {
				case res = <-done:
				case <-time.After(5 * time.Second):
					t.Fatalf("Run still running 5s after its context was cancelled (%d PubAcks dropped)", d.dropped.Load())
				}
			} else {
				select {
				case res = <-done:
				case <-time.After(30 * time.Second):
					t.Fatalf("Run still running after 30s (%d PubAcks dropped): hangs on a lost PubAck", d.dropped.Load())
				}
				if res.err != nil {
					t.Fatal(res.err)
				}
				if got := keysIn(t, js, n.Keys); len(got) != keys {
					t.Errorf("KEYS holds %d keys, want %d (each once)", len(got), keys)
				}
				if res.st.Published != keys {
					t.Errorf("stats = %+v, want %d published", res.st, keys)
				}
			}
			if d.dropped.Load() == 0 {
				t.Fatal("no PubAck was dropped: the test proves nothing")
			}
			kv, err := js.KeyValue(context.Background(), n.KV)
			if err != nil {
				t.Fatal(err)
			}
			var cp checkpoint.List
			if e, err := kv.Get(context.Background(), checkpoint.ListKey(file)); err == nil {
				if err := json.Unmarshal(e.Value(), &cp); err != nil {
					t.Fatal(err)
				}
			}
			if cp.Line > tt.maxLine {
				t.Errorf("checkpoint at line %d, past line %d: a key whose PubAck was lost is behind it", cp.Line, tt.maxLine)
			}
			if tt.cancel == 0 && (!cp.Done || cp.Line != keys) {
				t.Errorf("checkpoint %+v, want done at line %d", cp, keys)
			}
		})
	}
}
