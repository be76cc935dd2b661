package h2tunnel

import (
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// testServer runs a Server on a loopback listener.
type testServer struct {
	srv    *Server
	ln     net.Listener
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startServer(t testing.TB, cfg ServerConfig) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: NewServer(cfg), ln: ln, addr: ln.Addr().String()}
	ts.ctx, ts.cancel = context.WithCancel(context.Background())
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ts.mu.Lock()
			ts.conns = append(ts.conns, c)
			ts.mu.Unlock()
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				ts.srv.ServeConn(ts.ctx, c)
			}()
		}
	}()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	ts.ln.Close()
	ts.srv.Close()
	ts.cancel()
	ts.wg.Wait()
}

// kill closes every accepted TCP connection abruptly.
func (ts *testServer) kill() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, c := range ts.conns {
		c.Close()
	}
}

// echoHandler answers 200 and echoes the request body; a GET gets "hello".
func echoHandler(st *ServerStream) {
	if st.Request.Method == "GET" {
		st.WriteResponse(200, []hpack.HeaderField{{Name: "content-type", Value: "text/plain"}}, false)
		st.Write([]byte("hello"))
		st.CloseWrite()
		return
	}
	if err := st.WriteResponse(200, nil, false); err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := st.Read(buf)
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				st.CloseWrite()
			}
			return
		}
	}
}

func wsRequest(addr string) *Request {
	return &Request{Method: "CONNECT", Protocol: "websocket", Scheme: "http", Authority: addr, Path: "/ws",
		Header: []hpack.HeaderField{{Name: "sec-websocket-version", Value: "13"}}}
}

func newTestPool(cfg PoolConfig) *Pool {
	return NewPool(cfg)
}

// checkGoroutines fails if goroutines of this package outlive the test.
func checkGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		var leaked []string
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			if strings.Contains(g, "h2tunnel.") && !strings.Contains(g, "h2tunnel.checkGoroutines") &&
				!strings.Contains(g, "testing.(*T).Run") && !strings.Contains(g, "testing.tRunner") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUntil polls cond and fails the test with msg unless it turns true
// within d.
func waitUntil(t testing.TB, d time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
