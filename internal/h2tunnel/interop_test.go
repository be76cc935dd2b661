package h2tunnel

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestPoolAgainstXNetServer: our client against x/net's server (h2c with
// prior knowledge through http2.Server.ServeConn).
func TestPoolAgainstXNetServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h2s := &http2.Server{}
	mux := http.NewServeMux()
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
		io.WriteString(w, "hello "+r.Host)
	})
	mux.HandleFunc("/post", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(201)
		w.Write([]byte(strings.ToUpper(string(b))))
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				h2s.ServeConn(c, &http2.ServeConnOpts{Handler: mux})
			}()
		}
	}()
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()

	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)
	addr := ln.Addr().String()

	st, err := p.RoundTrip(ctx, addr, &Request{Method: "GET", Scheme: "http", Authority: "svc.test", Path: "/get", NoBody: true})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(st)
	st.Close()
	if err != nil || string(body) != "hello svc.test" || st.Response.Status != 200 {
		t.Fatalf("GET: %d %q %v", st.Response.Status, body, err)
	}
	if v, _ := fieldValue(st.Response.Header, "x-proto"); v != "HTTP/2.0" {
		t.Errorf("x-proto %q", v)
	}

	// POST: x/net's handler reads the body before answering, so the body
	// goes out before ReadResponse.
	for i := 0; i < 20; i++ {
		st, err = p.OpenStream(ctx, addr, &Request{Method: "POST", Scheme: "http", Authority: "svc.test", Path: "/post",
			Header: []hpack.HeaderField{{Name: "content-length", Value: "11"}}})
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("hello world"))
		st.CloseWrite()
		resp, err := st.ReadResponse(ctx)
		if err != nil {
			t.Fatal(err)
		}
		body, err = io.ReadAll(st)
		st.Close()
		if err != nil || resp.Status != 201 || string(body) != "HELLO WORLD" {
			t.Fatalf("POST: %d %q %v", resp.Status, body, err)
		}
	}
	if d := p.Stats().Dialed; d != 1 {
		t.Errorf("dialed %d", d)
	}
	// x/net's server does not enable extended CONNECT by default.
	_, err = p.RoundTrip(ctx, addr, wsRequest(addr))
	if err != ErrExtendedConnectUnsupported {
		t.Errorf("extended CONNECT to x/net: %v", err)
	}
}

// TestServerAgainstXNetTransport: x/net's client against our server.
func TestServerAgainstXNetTransport(t *testing.T) {
	ts := startServer(t, ServerConfig{Handler: func(st *ServerStream) {
		switch st.Request.Method {
		case "GET":
			st.WriteResponse(200, []hpack.HeaderField{{Name: "x-path", Value: st.Request.Path}}, false)
			io.WriteString(st, "hello "+st.Request.Authority)
			st.CloseWrite()
		case "POST":
			b, err := io.ReadAll(st)
			if err != nil {
				return
			}
			st.WriteResponse(200, nil, false)
			st.Write([]byte(strings.ToUpper(string(b))))
			st.CloseWrite()
		default:
			st.WriteResponse(405, nil, true)
		}
	}})
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := "http://" + ts.addr

	resp, err := client.Get(base + "/a?b=c")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello "+ts.addr || resp.Header.Get("X-Path") != "/a?b=c" || resp.ProtoMajor != 2 {
		t.Fatalf("GET: %v %q %v", resp.Status, body, resp.Header)
	}
	big := strings.Repeat("payload ", 1<<17) // 1 MiB: exercises flow control
	for i := 0; i < 5; i++ {
		resp, err = client.Post(base+"/p", "text/plain", strings.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != strings.ToUpper(big) {
			t.Fatalf("POST: %v %d bytes", resp.Status, len(body))
		}
	}
	req, _ := http.NewRequest("DELETE", base+"/", nil)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("DELETE: %v", resp.Status)
	}
	if ss := ts.srv.Stats(); ss.Conns != 1 || ss.StreamsAccepted != 7 {
		t.Errorf("server stats %+v", ss)
	}
}
