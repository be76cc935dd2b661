package outbound

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/config"
	"github.com/wsmesh/wsmesh/internal/httpproxy"
	"github.com/wsmesh/wsmesh/internal/testutil"
)

// Bytes that are no HTTP request, sent to an HTTP listener port, get a 400
// local reply and one access-log line saying so.
func TestOpaqueBytesOnHTTPPort(t *testing.T) {
	var log testutil.Lines
	o := New(Config{
		Snapshot: func() *config.Snapshot { return &config.Snapshot{} },
		Workload: func() *config.Workload { return &config.Workload{} },
		Proxy:    httpproxy.Config{Access: accesslog.New(&log)},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- o.Serve(ctx, ctx, ln, config.Listener{Port: ln.Addr().(*net.TCPAddr).Port, Protocol: config.ProtocolHTTP})
	}()
	defer func() { cancel(); <-done }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "{\"not\": \"http\"}\r\n"); err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	// The proxy's own local reply, as every other one it writes.
	if resp.StatusCode != 400 || string(body) != "not an HTTP/1.1 request on an HTTP port\n" || !resp.Close ||
		resp.Header.Get("Content-Type") != "text/plain" || resp.Header.Get("Server") != "wsmesh" || resp.Header.Get("Date") == "" {
		t.Fatalf("reply:\n%s", raw)
	}

	recs := log.Wait(t, 1)
	if len(recs) != 1 {
		t.Fatalf("access log: %d lines, want 1:\n%s", len(recs), log.String())
	}
	rec := recs[0]
	want := map[string]any{
		"response_code": 400.0, "response_flags": "DPE", "response_code_details": "http1.codec_error",
		"protocol": "HTTP/1.1", "bytes_sent": float64(len(body)), "bytes_received": 0.0,
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("access log %s = %v, want %v", k, rec[k], v)
		}
	}
}
