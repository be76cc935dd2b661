package echo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// startServer serves cfg on a loopback port and shuts the server down when
// the test ends. It returns the server and its ws:// URL.
func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	s := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return s, "ws://" + ln.Addr().String()
}

// testWriter sends server log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func dial(t *testing.T, url string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c, resp
}

// testCtx bounds one test. It is generous: a 16 MiB compressed echo
// under the race detector on a loaded 2-core machine takes tens of seconds.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEchoPreservesTypeAndContent(t *testing.T) {
	_, url := startServer(t, Config{})
	for _, mode := range []websocket.CompressionMode{websocket.CompressionDisabled, websocket.CompressionNoContextTakeover, websocket.CompressionContextTakeover} {
		c, resp := dial(t, url, &websocket.DialOptions{CompressionMode: mode})
		ext := resp.Header.Get("Sec-WebSocket-Extensions")
		if (mode == websocket.CompressionDisabled) != (ext == "") {
			t.Fatalf("mode %v: Sec-WebSocket-Extensions = %q", mode, ext)
		}
		ctx := testCtx(t)
		// The default limit admits a 16 MiB message; checking it once, with
		// compression, keeps the race-detector run short.
		size := 1 << 20
		if mode == websocket.CompressionNoContextTakeover {
			size = DefaultMaxMessageSize
		}
		big := bytes.Repeat([]byte("wsmesh "), size/7+1)[:size]
		msgs := []struct {
			typ  websocket.MessageType
			data []byte
		}{
			{websocket.MessageText, []byte("hello")},
			{websocket.MessageText, []byte("")},
			{websocket.MessageText, []byte("héllo wörld ✓")},
			{websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe}},
			{websocket.MessageBinary, nil},
			{websocket.MessageBinary, big},
			{websocket.MessageText, big[:1<<20]},
		}
		for _, m := range msgs {
			if err := c.Write(ctx, m.typ, m.data); err != nil {
				t.Fatal(err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if typ != m.typ || !bytes.Equal(got, m.data) {
				t.Fatalf("mode %v: echo of %v message of %d bytes came back as %v of %d bytes", mode, m.typ, len(m.data), typ, len(got))
			}
		}
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEchoFragmentedMessage(t *testing.T) {
	_, url := startServer(t, Config{})
	c, _ := dial(t, url, nil)
	ctx := testCtx(t)
	w, err := c.Writer(ctx, websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"frag", "mented ", "mess", "age"} {
		if _, err := io.WriteString(w, part); err != nil { // one frame per Write
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	typ, got, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(got) != "fragmented message" {
		t.Fatalf("got %v %q %v", typ, got, err)
	}
}

func TestPingAndCloseCodeEcho(t *testing.T) {
	_, url := startServer(t, Config{})
	c, _ := dial(t, url, nil)
	ctx := c.CloseRead(testCtx(t)) // keep reading so the pong is processed
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	// Close returns nil only when the peer answers with the same code.
	if err := c.Close(4321, "bye"); err != nil {
		t.Fatalf("close handshake with 4321: %v", err)
	}
}

func TestSubprotocolSelection(t *testing.T) {
	_, url := startServer(t, Config{Subprotocols: []string{"a", "b"}})
	c, _ := dial(t, url, &websocket.DialOptions{Subprotocols: []string{"x", "b", "a"}})
	if got := c.Subprotocol(); got != "b" {
		t.Fatalf("subprotocol = %q, want b (first offered that is supported)", got)
	}
	c2, _ := dial(t, url, &websocket.DialOptions{Subprotocols: []string{"x"}})
	if got := c2.Subprotocol(); got != "" {
		t.Fatalf("subprotocol = %q, want none", got)
	}
}

func TestOversizeMessageCloses1009(t *testing.T) {
	_, url := startServer(t, Config{MaxMessageSize: 1024})
	c, _ := dial(t, url, nil)
	ctx := testCtx(t)
	if err := c.Write(ctx, websocket.MessageBinary, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || len(got) != 1024 {
		t.Fatalf("message at the limit: %d bytes, %v", len(got), err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, make([]byte, 1025)); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusMessageTooBig || ce.Reason != "message larger than 1024 bytes" {
		t.Fatalf("read after oversize message: %v, want close 1009 naming the limit", err)
	}
}

func TestInvalidUTF8Closes1007(t *testing.T) {
	_, url := startServer(t, Config{})
	c, _ := dial(t, url, nil)
	ctx := testCtx(t)
	if err := c.Write(ctx, websocket.MessageText, []byte{'o', 'k', 0xff}); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusInvalidFramePayloadData {
		t.Fatalf("read after invalid UTF-8: %v, want close 1007", err)
	}
	// Binary messages are not UTF-8 checked.
	c2, _ := dial(t, url, nil)
	if err := c2.Write(ctx, websocket.MessageBinary, []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c2.Read(ctx); err != nil || !bytes.Equal(got, []byte{0xff}) {
		t.Fatalf("binary 0xff: %q %v", got, err)
	}
}

func TestPlainHTTP(t *testing.T) {
	_, url := startServer(t, Config{})
	base := "http" + strings.TrimPrefix(url, "ws")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(HealthPath, nil); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, body := get("/", nil); code != 426 || !strings.Contains(body, "WebSocket endpoint") {
		t.Fatalf("plain GET: %d %q", code, body)
	}
	code, body := get("/ws", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"})
	if code != 400 || !strings.Contains(body, "missing Sec-WebSocket-Key") {
		t.Fatalf("handshake without key: %d %q", code, body)
	}
}

// TestShutdownGoingAway checks that Shutdown closes every open connection
// with 1001 and leaves no goroutine behind.
func TestShutdownGoingAway(t *testing.T) {
	before := runtime.NumGoroutine()

	s := New(Config{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	url := "ws://" + ln.Addr().String()

	ctx := testCtx(t)
	var conns []*websocket.Conn
	for range 3 {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Make sure every connection is being served before shutting down.
	for _, c := range conns {
		if err := c.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}

	codes := make(chan websocket.StatusCode, len(conns))
	for _, c := range conns {
		go func() {
			_, _, err := c.Read(ctx)
			codes <- websocket.CloseStatus(err)
			c.CloseNow()
		}()
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	for range conns {
		if code := <-codes; code != websocket.StatusGoingAway {
			t.Fatalf("client saw close code %d, want 1001", code)
		}
	}

	// New connections are refused after Shutdown.
	if _, _, err := websocket.Dial(ctx, url, nil); err == nil {
		t.Fatal("dial after Shutdown succeeded")
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Shutdown, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShutdownDeadline checks that Shutdown returns when its context ends
// even if a peer never answers the close frame.
func TestShutdownDeadline(t *testing.T) {
	s, url := startServer(t, Config{})
	addr := strings.TrimPrefix(url, "ws://")
	// A raw client that completes the handshake and then never reads.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
}
