package h2tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// echoMessages sends n length-prefixed messages on st and checks that they
// come back in order.
func echoMessages(st *Stream, n int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 1))
	var sent [][]byte
	errc := make(chan error, 1)
	go func() {
		var hdr [4]byte
		for i := 0; i < n; i++ {
			msg := make([]byte, 1+r.IntN(2048))
			for j := range msg {
				msg[j] = byte(i + j)
			}
			sent = append(sent, msg)
			binary.BigEndian.PutUint32(hdr[:], uint32(len(msg)))
			if _, err := st.Write(append(hdr[:], msg...)); err != nil {
				errc <- err
				return
			}
		}
		errc <- st.CloseWrite()
	}()
	var got [][]byte
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(st, hdr[:]); err != nil {
			if err == io.EOF {
				break
			}
			return fmt.Errorf("read header after %d messages: %w", len(got), err)
		}
		msg := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(st, msg); err != nil {
			return err
		}
		got = append(got, msg)
	}
	if err := <-errc; err != nil {
		return err
	}
	if len(got) != n {
		return fmt.Errorf("got %d messages, want %d", len(got), n)
	}
	for i := range got {
		if !bytes.Equal(got[i], sent[i]) {
			return fmt.Errorf("message %d differs", i)
		}
	}
	return nil
}

func TestThousandConcurrentWebSocketStreams(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: echoHandler})
	p := NewPool(PoolConfig{})
	ctx := testCtx(t, 60*time.Second)
	const streams = 1000
	var wg sync.WaitGroup
	var started sync.WaitGroup
	release := make(chan struct{})
	errs := make(chan error, streams)
	started.Add(streams)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
			started.Done()
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			if st.Response.Status != 200 {
				errs <- fmt.Errorf("status %d", st.Response.Status)
				return
			}
			<-release // all 1000 are open at once
			if err := echoMessages(st, 20, uint64(i)); err != nil {
				errs <- fmt.Errorf("stream %d: %w", st.ID(), err)
			}
		}()
	}
	started.Wait()
	stats := p.Stats()
	es := stats.Endpoints[ts.addr]
	if stats.Dialed > 2 || es.ActiveStreams != streams {
		t.Errorf("with %d open streams: %+v %+v (want at most 2 connections)", streams, stats, es)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("pool: %+v", p.Stats())
	p.Close()
	ts.stop()
	checkGoroutines(t)
}

func TestPoolGrowsToPeerLimit(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, MaxConcurrentStreams: 100, Handler: echoHandler})
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 30*time.Second)
	var mu sync.Mutex
	var open []*Stream
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
			if err != nil {
				t.Error(err)
				failed.Add(1)
				return
			}
			mu.Lock()
			open = append(open, st)
			mu.Unlock()
		}()
	}
	wg.Wait()
	stats := p.Stats()
	es := stats.Endpoints[ts.addr]
	if es.Conns != 10 || stats.Dialed != 10 || es.ActiveStreams != 1000 {
		t.Errorf("stats %+v %+v, want 10 connections with 1000 streams", stats, es)
	}
	if ss := ts.srv.Stats(); ss.StreamsRefused != 0 {
		t.Errorf("server refused %d streams", ss.StreamsRefused)
	}
	for _, st := range open {
		st.CloseWrite()
	}
	for _, st := range open {
		io.Copy(io.Discard, st)
		st.Close()
	}
}

func TestFlowControlLargeTransfers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		win     uint32
		streams int
	}{
		{"default windows", 0, 8},
		{"64KiB windows", 65535, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := 16 << 20
			if raceEnabled {
				size = 4 << 20
			}
			ts := startServer(t, ServerConfig{AllowConnect: true, Handler: echoHandler,
				InitialStreamWindow: tc.win, InitialConnWindow: tc.win})
			p := NewPool(PoolConfig{InitialStreamWindow: tc.win, InitialConnWindow: tc.win})
			defer p.Close()
			ctx := testCtx(t, 120*time.Second)
			var wg sync.WaitGroup
			for i := 0; i < tc.streams; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
					if err != nil {
						t.Error(err)
						return
					}
					defer st.Close()
					data := make([]byte, size)
					for j := range data {
						data[j] = byte(j*7 + i)
					}
					go func() {
						for off := 0; off < len(data); off += 64 << 10 {
							if _, err := st.Write(data[off:min(off+64<<10, len(data))]); err != nil {
								t.Error(err)
								return
							}
						}
						st.CloseWrite()
					}()
					got, err := io.ReadAll(st)
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("stream %d: %d bytes back, %v", st.ID(), len(got), err)
					}
				}()
			}
			wg.Wait()
		})
	}
}

func TestHalfClose(t *testing.T) {
	// The server reads the request to EOF, then answers with its size and
	// more data; the client reads after CloseWrite.
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: func(st *ServerStream) {
		switch st.Request.Path {
		case "/client-first":
			n, err := io.Copy(io.Discard, st)
			if err != nil {
				st.Reset(http2.ErrCodeInternal)
				return
			}
			st.WriteResponse(200, nil, false)
			fmt.Fprintf(st, "read %d", n)
			st.CloseWrite()
		case "/server-first":
			st.WriteResponse(200, nil, false)
			st.Write([]byte("bye"))
			st.CloseWrite()
			// Keep reading after our side ended.
			n, _ := io.Copy(io.Discard, st)
			if n != 5 {
				st.Reset(http2.ErrCodeInternal)
			}
		}
	}})
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)

	req := wsRequest(ts.addr)
	req.Path = "/client-first"
	st, err := p.OpenStream(ctx, ts.addr, req)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("12345678"))
	st.CloseWrite()
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrWriteAfterClose) {
		t.Errorf("write after CloseWrite: %v", err)
	}
	if _, err := st.ReadResponse(ctx); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(st)
	if err != nil || string(body) != "read 8" {
		t.Fatalf("client-first: %q %v", body, err)
	}
	st.Close()

	req.Path = "/server-first"
	st, err = p.RoundTrip(ctx, ts.addr, req)
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(st)
	if err != nil || string(body) != "bye" {
		t.Fatalf("server-first: %q %v", body, err)
	}
	// Our side is still open after the server ended its side.
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	// Wait for the stream to finish cleanly on both sides.
	waitUntil(t, 5*time.Second, "stream did not close", func() bool { return p.Stats().Endpoints[ts.addr].ActiveStreams == 0 })
	if ss := ts.srv.Stats(); ss.PeerResets != 0 {
		t.Errorf("unexpected resets: %+v", ss)
	}
}

func TestServerResetEndsOnlyThatStream(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: func(st *ServerStream) {
		if st.Request.Path == "/reset" {
			st.WriteResponse(200, nil, false)
			buf := make([]byte, 5)
			io.ReadFull(st, buf)
			st.Reset(http2.ErrCodeInternal)
			return
		}
		echoHandler(st)
	}})
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)

	good, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	req := wsRequest(ts.addr)
	req.Path = "/reset"
	bad, err := p.RoundTrip(ctx, ts.addr, req)
	if err != nil {
		t.Fatal(err)
	}
	bad.Write([]byte("12345"))
	_, err = io.ReadAll(bad)
	var se *StreamError
	if !errors.As(err, &se) || se.Code != http2.ErrCodeInternal || !se.Remote {
		t.Fatalf("reset stream read: %v", err)
	}
	if _, err := bad.Write([]byte("x")); !errors.As(err, &se) {
		t.Errorf("write on reset stream: %v", err)
	}
	bad.Close()
	// The other stream on the same connection is unaffected.
	if err := echoMessages(good, 50, 1); err != nil {
		t.Fatal(err)
	}
	good.Close()
	if d := p.Stats().Dialed; d != 1 {
		t.Errorf("dialed %d", d)
	}
}

func TestGoAwayDrain(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: echoHandler})
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)
	old, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	// Exchange some data so the stream is in use across the GOAWAY.
	old.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(old, buf); err != nil {
		t.Fatal(err)
	}
	ts.srv.Drain()

	// New streams go to a new connection (directly, or after the old one
	// excluded them by GOAWAY and RoundTrip retried).
	fresh, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Stats().Dialed; d != 2 {
		t.Errorf("dialed %d connections, want 2", d)
	}
	// The old stream runs to completion.
	if err := echoMessages(old, 100, 2); err != nil {
		t.Fatalf("old stream after GOAWAY: %v", err)
	}
	old.Close()
	if err := echoMessages(fresh, 10, 3); err != nil {
		t.Fatal(err)
	}
	fresh.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		es := p.Stats().Endpoints[ts.addr]
		if es.Conns == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old connection not dropped: %+v", es)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerKilled(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: echoHandler})
	p := NewPool(PoolConfig{})
	ctx := testCtx(t, 10*time.Second)
	var streams []*Stream
	for i := 0; i < 20; i++ {
		st, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	ts.kill()
	for _, st := range streams {
		_, err := io.ReadAll(st)
		if !errors.Is(err, ErrConnLost) {
			t.Errorf("read after kill: %v", err)
		}
		st.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Endpoints[ts.addr].Conns != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("dead connection kept: %+v", p.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Close()
	ts.stop()
	checkGoroutines(t)
}

func TestExtendedConnectUnsupported(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: false, Handler: echoHandler})
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)
	if _, known := p.PeerSupportsExtendedConnect(ts.addr); known {
		t.Fatal("known before any connection")
	}
	_, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
	if !errors.Is(err, ErrExtendedConnectUnsupported) {
		t.Fatalf("RoundTrip: %v", err)
	}
	if sup, known := p.PeerSupportsExtendedConnect(ts.addr); sup || !known {
		t.Errorf("PeerSupportsExtendedConnect = %v, %v", sup, known)
	}
	// Plain requests still work on the same connection.
	st, err := p.RoundTrip(ctx, ts.addr, &Request{Method: "GET", Authority: "x", Path: "/", NoBody: true})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, st)
	st.Close()
	ss := ts.srv.Stats()
	if ss.StreamsAccepted != 1 || ss.StreamsRejected != 0 {
		t.Errorf("server saw %+v: the CONNECT must not have been sent", ss)
	}
	if p.Stats().Dialed != 1 {
		t.Errorf("dialed %d", p.Stats().Dialed)
	}
}

func TestDeadlinesAndCancel(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: func(st *ServerStream) {
		st.WriteResponse(200, nil, false)
		<-st.Context().Done()
	}})
	p := NewPool(PoolConfig{InitialStreamWindow: 65535})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)
	st, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := st.Read(make([]byte, 10)); !errors.Is(err, errDeadline) {
		t.Errorf("read past deadline: %v", err)
	}
	// The server never reads: a write larger than its window blocks, then
	// times out having written exactly the window. The deadline passes
	// only once the window is used up: a fixed one (it was 2 s) can pass
	// first on a loaded machine, whose writer has not sent it all yet.
	st.SetWriteDeadline(time.Now().Add(time.Minute))
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := st.Write(make([]byte, 8<<20))
		res <- result{n, err}
	}()
	waitUntil(t, 30*time.Second, "the server's stream window was not used up", func() bool {
		w := st.s.c.w
		w.mu.Lock()
		defer w.mu.Unlock()
		return st.s.sendWin <= 0
	})
	st.SetWriteDeadline(time.Now()) // passes while the Write waits
	if r := <-res; !errors.Is(r.err, errDeadline) || r.n != DefaultInitialStreamWindow {
		t.Errorf("write past window: n=%d err=%v", r.n, r.err)
	}
	st.Close()
	// Closing the stream cancels the server's context (handler returns).
	waitUntil(t, 5*time.Second, "server stream still open", func() bool { return ts.srv.Stats().ActiveStreams == 0 })
	// A cancelled RoundTrip context resets the stream.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.RoundTrip(cctx, ts.addr, wsRequest(ts.addr)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled RoundTrip: %v", err)
	}
}

var errDeadline = os.ErrDeadlineExceeded

// TestReadResponseCancelledAfterHead checks that a cancelled context wins
// over a response head that has already arrived: the caller gave up.
func TestReadResponseCancelledAfterHead(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: func(st *ServerStream) {
		st.WriteResponse(200, nil, false)
		<-st.Context().Done()
	}})
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)
	st, err := p.OpenStream(ctx, ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	waitUntil(t, time.Until(deadline), "no response head", func() bool {
		st.s.mu.Lock()
		defer st.s.mu.Unlock()
		return st.s.headDone
	})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.ReadResponse(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadResponse with a cancelled context after the head: %v", err)
	}
	if n, err := st.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the stream was not reset: read %d bytes", n)
	}
	waitUntil(t, time.Until(deadline), "the server's stream stayed open: no RST_STREAM", func() bool { return ts.srv.Stats().ActiveStreams == 0 })
}
