package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/testutil"
)

// staticRouter sends every request to fixed endpoints, or answers NR for
// Host "unknown".
type staticRouter struct{ endpoints []string }

func (r staticRouter) Route(req *h1.Request, _ net.Addr) (*Target, error) {
	if strings.HasPrefix(req.Headers.Get("Host"), "unknown") {
		return nil, &LocalReply{Status: 404, Flag: accesslog.NoRouteFound, Details: "route_not_found"}
	}
	return &Target{RouteName: "default", Cluster: "outbound|80||test", Endpoints: r.endpoints, ConnectTimeout: time.Second}, nil
}

// startProxy serves the proxy on a loopback listener until the test ends.
func startProxy(t *testing.T, cfg Config) (addr string, logs *testutil.Lines) {
	t.Helper()
	logs = &testutil.Lines{}
	cfg.Access = accesslog.New(logs)
	cfg.ObserveWebSocket = true
	p := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var cw sync.WaitGroup
		for {
			c, err := ln.Accept()
			if err != nil {
				cw.Wait()
				return
			}
			cw.Add(1)
			go func() { defer cw.Done(); p.ServeH1(ctx, c, bufio.NewReader(c)) }()
		}
	}()
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait(); p.Close() })
	return ln.Addr().String(), logs
}

func startHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestPlainRequestsKeepAliveAndChunked(t *testing.T) {
	up := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got-Id", r.Header.Get("X-Request-Id"))
		fmt.Fprintf(w, "%s %s %d %s", r.Method, r.URL.Path, len(body), r.Header.Get("X-Forwarded-For"))
	}))
	addr, logs := startProxy(t, Config{Router: staticRouter{[]string{deadAddr(t), up}}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	// Two requests on one connection: a GET and a chunked POST.
	fmt.Fprintf(c, "GET /a HTTP/1.1\r\nHost: svc\r\n\r\n")
	fmt.Fprintf(c, "POST /b HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	for i, want := range []string{"GET /a 0 127.0.0.1", "POST /b 5 127.0.0.1"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("response %d: %d %q", i, resp.StatusCode, b)
		}
		if resp.Header.Get("X-Got-Id") == "" {
			t.Fatal("no X-Request-Id generated")
		}
	}
	c.Close()
	waitFor(t, func() bool { return len(logs.Records(t)) == 2 })
	recs := logs.Records(t)
	if recs[1]["method"] != "POST" || recs[1]["bytes_received"].(float64) != 5 || recs[1]["response_code"].(float64) != 200 || recs[1]["upstream_host"] != up {
		t.Fatalf("record: %v", recs[1])
	}
}

func TestLocalReplies(t *testing.T) {
	addr, logs := startProxy(t, Config{Router: staticRouter{[]string{deadAddr(t)}}, HeaderReadTimeout: 300 * time.Millisecond, Limits: h1.Limits{MaxHeadBytes: 1024}})
	cases := []struct {
		req    string
		status int
		flag   string
	}{
		{"GET / HTTP/1.1\r\nHost: unknown\r\n\r\n", 404, "NR"},
		{"GET / HTTP/1.1\r\nHost: svc\r\n\r\n", 503, "UF"},
		{"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "DPE"},
		{"GET / HTTP/1.1\r\nHost: svc\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431, "DPE"},
		{"GET / HTTP/1.1\r\nHost: svc\r\n", 408, "DPE"}, // slow client never finishes its head
		{"GET /ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400, "DPE"},
	}
	for _, tc := range cases {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, tc.req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != tc.status {
			t.Fatalf("%q: %v %v", tc.req[:20], resp, err)
		}
	}
	waitFor(t, func() bool { return len(logs.Records(t)) == len(cases) })
	// Lines come in the order the requests ended, not always case order.
	want := map[float64]string{}
	for _, c := range cases {
		want[float64(c.status)] = c.flag
	}
	for _, r := range logs.Records(t) {
		code := r["response_code"].(float64)
		if r["response_flags"] != want[code] {
			t.Errorf("status %v: flags %v want %s", code, r["response_flags"], want[code])
		}
	}
}

func TestWebSocketRelayAndRecord(t *testing.T) {
	up := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"chat"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 21)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	}))
	addr, logs := startProxy(t, Config{Router: staticRouter{[]string{up}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+addr+"/chat", &websocket.DialOptions{Subprotocols: []string{"chat"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || c.Subprotocol() != "chat" {
		t.Fatalf("handshake: %d %q", resp.StatusCode, c.Subprotocol())
	}
	c.SetReadLimit(1 << 21)
	big := bytes.Repeat([]byte("x"), 1<<20)
	for _, msg := range [][]byte{[]byte("hello"), []byte("world"), big} {
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %v", err)
		}
	}
	c.Close(websocket.StatusNormalClosure, "bye")
	waitFor(t, func() bool { return len(logs.Records(t)) == 1 })
	r := logs.Records(t)[0]
	if r["response_code"].(float64) != 101 || r["websocket_messages_downstream"].(float64) != 3 || r["websocket_messages_upstream"].(float64) != 3 {
		t.Fatalf("record: %v", r)
	}
	if r["websocket_close_code"].(float64) != 1000 || r["websocket_closed_by"] != "downstream" || r["websocket_subprotocol"] != "chat" {
		t.Fatalf("close fields: %v", r)
	}
	if r["bytes_received"].(float64) < 1<<20 || r["bytes_sent"].(float64) < 1<<20 {
		t.Fatalf("bytes: %v", r)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnectionLimitAnswers503(t *testing.T) {
	up := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr, logs := startProxy(t, Config{Router: staticRouter{[]string{up}}, Limiter: &Limiter{Max: 1}})
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	fr := bufio.NewReader(first)
	io.WriteString(first, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	if resp, err := http.ReadResponse(fr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first: %v %v", resp, err)
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	io.WriteString(second, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(second), nil)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("second: %v %v", resp, err)
	}
	first.Close()
	waitFor(t, func() bool { return len(logs.Records(t)) == 2 })
	var flags []string
	for _, r := range logs.Records(t) {
		flags = append(flags, r["response_flags"].(string))
	}
	if !strings.Contains(strings.Join(flags, " "), "OM") {
		t.Fatalf("flags %v", flags)
	}
}

// TestContextEndingAtHandoffEndsRelayWithItsCause cancels the serving
// context while the upstream's 101 is on its way: the WebSocket relay that
// takes the connection over must end because of the context, not because
// of the read deadline the context's end put on the downstream connection.
func TestContextEndingAtHandoffEndsRelayWithItsCause(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // upstream: cancels the proxy's context, then answers 101
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		cancel()
		time.Sleep(50 * time.Millisecond) // the context's callbacks run
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		io.Copy(io.Discard, c)
	}()
	logs := &testutil.Lines{}
	p := New(Config{Router: staticRouter{[]string{ln.Addr().String()}}, Access: accesslog.New(logs), ObserveWebSocket: true})
	defer p.Close()
	tc, proxySide := testutil.TCPPair(t)
	defer tc.Close()
	go p.ServeH1(ctx, proxySide, bufio.NewReader(proxySide))
	io.WriteString(tc, "GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	waitFor(t, func() bool { return len(logs.Records(t)) == 1 })
	r := logs.Records(t)[0]
	if d, _ := r["connection_termination_details"].(string); !strings.Contains(d, "context canceled") {
		t.Fatalf("relay ended with %q, want the context's cause", d)
	}
}
