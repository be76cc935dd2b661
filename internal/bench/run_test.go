package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsmesh/wsmesh/internal/echo"
)

// startEcho serves internal/echo on a loopback port for the test.
func startEcho(tb testing.TB) string {
	tb.Helper()
	srv := echo.New(echo.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

func target(tb testing.TB, addr string) *Target {
	tb.Helper()
	// The URL names a service; --connect-to sends it to the echo server.
	t, err := ParseTarget("ws://echo.bench.svc:8080/x", map[string]string{"echo.bench.svc:8080": addr})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func TestParseTarget(t *testing.T) {
	tg, err := ParseTarget("ws://localhost:9", nil)
	if err != nil || tg.Addr != "localhost:9" || tg.URL.Path != "/" {
		t.Fatalf("%+v %v", tg, err)
	}
	if tg, err := ParseTarget("ws://127.0.0.1", nil); err != nil || tg.Addr != "127.0.0.1:80" {
		t.Fatalf("%+v %v", tg, err)
	}
	for _, bad := range []string{"wss://127.0.0.1:1/", "http://127.0.0.1:1/", "ws://192.0.2.1:80/", "ws://example.com/"} {
		if _, err := ParseTarget(bad, nil); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := ParseTarget("ws://svc:80/", map[string]string{"svc:80": "10.0.0.1:80"}); err == nil {
		t.Error("non-loopback --connect-to accepted")
	}
}

func TestMessagesEchoIntact(t *testing.T) {
	tg := target(t, startEcho(t))
	for _, size := range []int{0, 64, 125, 126, 1024, 65535, 65536, 300000} {
		c, err := dialWS(context.Background(), tg, size)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := c.writeMessage(); err != nil {
				t.Fatal(err)
			}
			n, err := c.readMessage()
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !bytes.Equal(c.buf[:n], payload(size)) {
				t.Fatalf("size %d: echo differs (%d bytes back)", size, n)
			}
		}
		if err := c.closeHandshake(time.Second); err != nil {
			t.Fatalf("size %d: close: %v", size, err)
		}
	}
}

func TestRunModes(t *testing.T) {
	addr := startEcho(t)
	for _, mode := range Modes {
		t.Run(mode, func(t *testing.T) {
			cfg := Config{Mode: mode, Target: target(t, addr), Duration: 300 * time.Millisecond,
				Warmup: 50 * time.Millisecond, Procs: []Proc{{Label: "me", PID: os.Getpid()}}, Label: "direct", Round: 2}
			if mode == ModeThroughput {
				cfg.Conns = 8
			}
			if mode == ModeIdle {
				cfg.Conns = 50
			}
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 {
				t.Fatalf("%d errors: %s", res.Errors, res.Error)
			}
			switch mode {
			case ModeIdle:
				if res.OpenConns != 50 {
					t.Fatalf("held %d", res.OpenConns)
				}
			default:
				if res.Messages == 0 {
					t.Fatal("no messages")
				}
			}
			if mode == ModeLatency || mode == ModeThroughput || mode == ModeUpgrade {
				if res.Latency == nil || res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 {
					t.Fatalf("latency %+v", res.Latency)
				}
			}
			if len(res.Procs) != 1 || res.Procs[0].RSSAfter <= 0 || res.Procs[0].Err != "" {
				t.Fatalf("procs %+v", res.Procs)
			}
			var sb strings.Builder
			if err := WriteText(&sb, res); err != nil || !strings.Contains(sb.String(), mode) {
				t.Fatalf("table: %v\n%s", err, sb.String())
			}
			if _, err := json.Marshal(res); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunRefusedTarget(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err := Run(context.Background(), Config{Mode: ModeLatency, Target: target(t, addr), Duration: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("run against a closed port succeeded")
	}
}

func TestRelayBaseline(t *testing.T) {
	echoAddr := startEcho(t)
	for _, buffered := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- (&Relay{Upstream: echoAddr, Buffered: buffered}).Serve(ctx, ln) }()
		res, err := Run(context.Background(), Config{Mode: ModeStream, Target: target(t, ln.Addr().String()),
			Duration: 200 * time.Millisecond, Size: 100000})
		if err != nil || res.Messages == 0 || res.Errors != 0 {
			t.Fatalf("buffered=%v: %+v %v", buffered, res, err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestSummarize(t *testing.T) {
	mk := func(label string, round int, rate, cpu float64) *Result {
		return &Result{Mode: ModeThroughput, Label: label, Round: round, MsgPerSec: rate,
			Procs: []ProcReport{{CPUUsPerMsg: cpu / 2}, {CPUUsPerMsg: cpu / 2}}}
	}
	lat := func(label string, round int, p50 float64) *Result {
		return &Result{Mode: ModeLatency, Label: label, Round: round, Latency: &LatencyReport{P50: p50}}
	}
	rs := []*Result{
		mk("direct", 1, 1000, 0), mk("a", 1, 500, 20), mk("b", 1, 250, 40),
		mk("direct", 2, 2000, 0), mk("a", 2, 1000, 20), mk("b", 2, 1000, 40),
		mk("direct", 3, 1000, 0), mk("a", 3, 400, 20), mk("b", 3, 400, 10),
		lat("direct", 1, 50), lat("a", 1, 80), lat("b", 1, 110),
	}
	var sb strings.Builder
	Summarize(&sb, rs, []string{"direct", "b", "a"}, []Pair{{ModeThroughput, "a", "b"}, {ModeLatency, "a", "b"}})
	out := sb.String()
	for _, want := range []string{
		"| a | 500 | 0.50 | 20.00 |",                   // median rate, median ratio to direct, CPU sum
		"| throughput (msg/s) | a | b | 1.00 | 0.50 |", // per-round ratios 2, 1, 1; CPU 0.5, 0.5, 2
		"| latency (p50 µs added) | a | b | 0.50 | — |",
		"| a | 80.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "| b |") > strings.Index(out, "| a |") {
		t.Errorf("order not respected:\n%s", out)
	}
}

// cannedEcho answers every client frame of a size-byte message with a
// precomputed server frame: one read and one write per message, so that
// BenchmarkClient measures mostly the client. It accepts the handshake of
// either client without checking it.
func cannedEcho(b *testing.B, size int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	in := len(clientFrame(2, payload(size)))
	out := append([]byte{0x82, 126, byte(size >> 8), byte(size)}, payload(size)...)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + wsGUID))
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
					base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n")
				buf := make([]byte, in)
				for {
					if _, err := io.ReadFull(br, buf); err != nil {
						return
					}
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkClient compares the cost per echoed 1 KiB message of the raw
// frame client with github.com/coder/websocket against the same canned
// echo (go test -bench Client ./internal/bench/).
func BenchmarkClient(b *testing.B) {
	addr := cannedEcho(b, 1024)
	tg := target(b, addr)
	b.Run("raw", func(b *testing.B) {
		c, err := dialWS(context.Background(), tg, 1024)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(1024)
		b.ReportAllocs()
		for b.Loop() {
			if err := c.writeMessage(); err != nil {
				b.Fatal(err)
			}
			if _, err := c.readMessage(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("coder-websocket", func(b *testing.B) {
		ctx := context.Background()
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(-1)
		msg := payload(1024)
		b.SetBytes(1024)
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
