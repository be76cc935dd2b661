package h2tunnel

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

func TestBasicEcho(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: echoHandler})
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st, err := p.RoundTrip(ctx, ts.addr, &Request{Method: "GET", Scheme: "http", Authority: "x", Path: "/", NoBody: true})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(st)
	if err != nil || string(body) != "hello" || st.Response.Status != 200 {
		t.Fatalf("GET: %q %v %+v", body, err, st.Response)
	}
	st.Close()

	ws, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte("abc"), 100000)
	go func() {
		ws.Write(msg)
		ws.CloseWrite()
	}()
	got, err := io.ReadAll(ws)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	ws.Close()
}
