package wsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsmesh/wsmesh/internal/echo"
	"github.com/wsmesh/wsmesh/internal/testutil"
)

// serve runs h on a loopback port for the test and returns its ws:// URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "ws://" + ln.Addr().String()
}

// startEcho runs a wsmesh echo server for the test.
func startEcho(t *testing.T, cfg echo.Config) (*echo.Server, string) {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s := echo.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, "ws://" + ln.Addr().String()
}

// run runs the client with input and returns what it printed.
func run(t *testing.T, opts Options, input string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	err := Run(ctx, opts, strings.NewReader(input), &out)
	return out.String(), err
}

func TestRunPipedEcho(t *testing.T) {
	_, url := startEcho(t, echo.Config{})
	out, err := run(t, Options{URL: url, Wait: DefaultWait}, "hello\nworld\n\nlast line without newline")
	if err != nil {
		t.Fatal(err)
	}
	want := "Connected to " + url + ".\n< hello\n< world\n< \n< last line without newline\nConnection closed: 1000 (OK).\n"
	if out != want {
		t.Fatalf("output:\n%q\nwant:\n%q", out, want)
	}
}

func TestRunPipedBinary(t *testing.T) {
	_, url := startEcho(t, echo.Config{})
	out, err := run(t, Options{URL: url, Binary: true, Wait: DefaultWait}, "hi\n\x00\xff\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "Connected to " + url + ".\n< (binary) 6869\n< (binary) 00ff\nConnection closed: 1000 (OK).\n"
	if out != want {
		t.Fatalf("output:\n%q\nwant:\n%q", out, want)
	}
}

func TestRunInteractiveOutput(t *testing.T) {
	_, url := startEcho(t, echo.Config{})
	out, err := run(t, Options{URL: url, Interactive: true}, "")
	if err != nil {
		t.Fatal(err)
	}
	// No input: connect, prompt, end of input, close over the prompt line.
	want := "Connected to " + url + ".\n> \r\x1b[KConnection closed: 1000 (OK).\n"
	if out != want {
		t.Fatalf("output:\n%q\nwant:\n%q", out, want)
	}

	// A message is printed above the prompt with websockets' sequence.
	pr, pw := io.Pipe()
	var buf testutil.Lines
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), Options{URL: url, Interactive: true}, pr, &buf) }()
	io.WriteString(pw, "hello\n")
	waitFor(t, &buf, "< hello")
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); !strings.Contains(got, "\x1b7\n\x1b[A\x1b[L< hello\n\x1b8\x1b[B") ||
		!strings.HasSuffix(got, "\r\x1b[KConnection closed: 1000 (OK).\n") {
		t.Fatalf("interactive output %q", got)
	}
}

func TestRunServerCloses(t *testing.T) {
	closeWith := func(code websocket.StatusCode, reason string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			c.Read(r.Context())
			c.Close(code, reason)
		})
	}
	tests := []struct {
		code   websocket.StatusCode
		reason string
		want   string
	}{
		{4000, "bye", "Connection closed: 4000 (private use) bye."},
		{websocket.StatusGoingAway, "", "Connection closed: 1001 (going away)."},
		{websocket.StatusInternalError, "boom", "Connection closed: 1011 (unexpected error) boom."},
	}
	for _, tt := range tests {
		url := serve(t, closeWith(tt.code, tt.reason))
		// The input stays open: the server's close must end the client.
		pr, pw := io.Pipe()
		defer pw.Close()
		var out testutil.Lines
		done := make(chan error, 1)
		go func() { done <- Run(context.Background(), Options{URL: url, Wait: DefaultWait}, pr, &out) }()
		pw.Write([]byte("trigger\n"))
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("client did not end after the server closed")
		}
		if want := "Connected to " + url + ".\n" + tt.want + "\n"; out.String() != want {
			t.Fatalf("output %q, want %q", out.String(), want)
		}
	}
}

func TestRunServerAnswersCloseWithOtherCode(t *testing.T) {
	// A server that answers the client's 1000 with 4001 and a reason: the
	// client prints what it received, as the Python client does.
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			acceptKey(r.Header.Get("Sec-WebSocket-Key")))
		brw.Flush()
		hdr := make([]byte, 2+4+2) // masked close frame from the client: code 1000
		if _, err := io.ReadFull(brw, hdr); err != nil {
			return
		}
		nc.Write(append([]byte{0x88, 2 + 3, 0x0f, 0xa1}, "why"...)) // 4001 "why"
		io.Copy(io.Discard, nc)
	}))
	out, err := run(t, Options{URL: url}, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Connected to " + url + ".\nConnection closed: 4001 (private use) why.\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

func TestRunShutdownGoingAway(t *testing.T) {
	s, url := startEcho(t, echo.Config{})
	pr, pw := io.Pipe()
	defer pw.Close()
	var out testutil.Lines
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), Options{URL: url}, pr, &out) }()
	io.WriteString(pw, "hello\n")
	waitFor(t, &out, "< hello\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := "Connected to " + url + ".\n< hello\nConnection closed: 1001 (going away).\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
}

func TestRunWaitTimeout(t *testing.T) {
	// A server that never answers: the client gives up after Wait.
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}))
	start := time.Now()
	out, err := run(t, Options{URL: url, Wait: 300 * time.Millisecond}, "one\ntwo\n")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Fatalf("took %v, want about the 300ms wait", d)
	}
	if want := "Connected to " + url + ".\nConnection closed: 1000 (OK).\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

func TestRunCancelClosesNormally(t *testing.T) {
	_, url := startEcho(t, echo.Config{})
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var out testutil.Lines
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{URL: url}, pr, &out) }()
	waitFor(t, &out, "Connected")
	cancel() // what SIGINT/SIGTERM do in the command
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if want := "Connected to " + url + ".\nConnection closed: 1000 (OK).\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
}

func TestRunHeadersAndSubprotocols(t *testing.T) {
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"v2"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		msg := fmt.Sprintf("host=%s token=%s proto=%s", r.Host, r.Header.Get("X-Token"), c.Subprotocol())
		c.Write(r.Context(), websocket.MessageText, []byte(msg))
		for { // until the client's close, which Read answers
			if _, _, err := c.Read(r.Context()); err != nil {
				return
			}
		}
	}))
	hdr, _ := ParseHeaders([]string{"X-Token: abc", "Host: svc.example"})
	out, err := run(t, Options{URL: url, Header: hdr, Subprotocols: []string{"v1", "v2"}, Wait: time.Second}, "x\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Connected to " + url + ".\n< host=svc.example token=abc proto=v2\nConnection closed: 1000 (OK).\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

func TestRunConnectErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "ws://" + ln.Addr().String()
	ln.Close()
	notFound := serve(t, http.NotFoundHandler())

	tests := []struct{ url, cause string }{
		{refused, "connection refused"},
		{notFound + "/x", "server rejected WebSocket connection: HTTP 404"},
		{"http://example.com", "http://example.com isn't a valid URI: scheme isn't ws or wss"},
		{"ws://", "ws:// isn't a valid URI: host is missing"},
	}
	for _, tt := range tests {
		out, err := run(t, Options{URL: tt.url}, "")
		var ce *ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: error %v, want *ConnectError", tt.url, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "Failed to connect to "+tt.url+": ") || !strings.Contains(msg, tt.cause) ||
			!strings.HasSuffix(msg, ".") || strings.Contains(msg, "\n") {
			t.Fatalf("%s: message %q, want one line naming %q", tt.url, msg, tt.cause)
		}
		if out != "" {
			t.Fatalf("%s: printed %q on the output", tt.url, out)
		}
	}
}

// waitFor waits up to 10 seconds until the client has printed s.
func waitFor(t *testing.T, b *testutil.Lines, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q never contained %q", b.String(), s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
