package h2tunnel

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestNotifyReadableAndDetach checks that a detached handler's stream stays
// open after the handler returns, that NotifyReadable calls back once for
// data, for the end of the stream, and not when data is already there, and
// that release ends the stream as the handler's return would.
func TestNotifyReadableAndDetach(t *testing.T) {
	got := make(chan *ServerStream, 1)
	release := make(chan func(), 1)
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: func(ss *ServerStream) {
		if err := ss.WriteResponse(200, nil, false); err != nil {
			t.Error(err)
		}
		release <- ss.Detach()
		got <- ss
	}})
	ctx, st := openWS(t, ts)
	ss := <-got
	time.Sleep(20 * time.Millisecond) // the handler has returned; the stream must still work

	called := make(chan struct{}, 2)
	notify := func() { called <- struct{}{} }
	if !ss.NotifyReadable(notify) {
		t.Fatal("nothing to read, yet NotifyReadable reported readable")
	}
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
	case <-ctx.Done():
		t.Fatal("no callback for data")
	}
	if ss.NotifyReadable(notify) {
		t.Fatal("data is buffered, yet NotifyReadable registered a callback")
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(ss, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q %v", buf, err)
	}
	if _, err := ss.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q %v", buf, err)
	}
	if !ss.NotifyReadable(notify) {
		t.Fatal("nothing to read after draining")
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
	case <-ctx.Done():
		t.Fatal("no callback for the end of the stream")
	}
	if n, err := ss.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read %d %v, want EOF", n, err)
	}
	select {
	case <-called:
		t.Fatal("callback called twice")
	default:
	}
	(<-release)() // ends the response with END_STREAM
	if n, err := st.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("client read %d %v after release, want EOF", n, err)
	}
}

// TestReadDeadlineSetWhileWaiting checks that a read deadline set while a
// reader already waits (how a relay stops an idle stream's wait) ends the
// wait.
func TestReadDeadlineSetWhileWaiting(t *testing.T) {
	got := make(chan *ServerStream, 1)
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: func(ss *ServerStream) {
		if err := ss.WriteResponse(200, nil, false); err != nil {
			t.Error(err)
		}
		got <- ss
		<-ss.Context().Done()
	}})
	ctx, st := openWS(t, ts)
	defer st.Close()
	ss := <-got
	for name, wait := range map[string]func() error{
		"WaitReadable": ss.WaitReadable,
		"Read":         func() error { _, err := ss.Read(make([]byte, 1)); return err },
	} {
		errc := make(chan error, 1)
		go func() { errc <- wait() }()
		time.Sleep(20 * time.Millisecond)
		_ = ss.SetReadDeadline(time.Unix(1, 0))
		select {
		case err := <-errc:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("%s: %v, want deadline exceeded", name, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s: a deadline set while waiting did not end the wait", name)
		}
		_ = ss.SetReadDeadline(time.Time{})
	}
}

// openWS opens an extended CONNECT stream to ts from a fresh pool; both
// and the returned context end with the test.
func openWS(t *testing.T, ts *testServer) (context.Context, *Stream) {
	t.Helper()
	p := NewPool(PoolConfig{})
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	st, err := p.RoundTrip(ctx, ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	return ctx, st
}

// TestPanicAfterDetach checks that a handler panicking after Detach leaves
// the accounting to release: the stream is reset, release later does not
// count the handler twice, and the server still shuts down.
func TestPanicAfterDetach(t *testing.T) {
	release := make(chan func(), 1)
	ts := startServer(t, ServerConfig{AllowConnect: true, Handler: func(ss *ServerStream) {
		if err := ss.WriteResponse(200, nil, false); err != nil {
			t.Error(err)
		}
		release <- ss.Detach()
		panic("handler failed after detaching its stream")
	}})
	ctx, st := openWS(t, ts)
	if _, err := st.Read(make([]byte, 1)); err == nil {
		t.Fatal("read on a stream whose handler panicked succeeded")
	}
	(<-release)() // would drive the handler count below zero (a panic) if counted twice
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	default:
	}
}
