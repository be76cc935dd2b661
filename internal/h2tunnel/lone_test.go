package h2tunnel

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// heldConn holds every Write while its gate is shut.
type heldConn struct {
	net.Conn
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (g *heldConn) shut() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *heldConn) open() {
	g.mu.Lock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
	g.mu.Unlock()
}

func (g *heldConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.Conn.Write(p)
}

// heldPool starts an echo server and a pool whose connection's writes can
// be held; held returns the pool's last connection.
func heldPool(t *testing.T) (ts *testServer, p *Pool, held func() *heldConn) {
	ts = startServer(t, ServerConfig{AllowConnect: true, Handler: echoHandler})
	var mu sync.Mutex
	var hc *heldConn
	p = NewPool(PoolConfig{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		hc = &heldConn{Conn: c}
		return hc, nil
	}})
	t.Cleanup(func() { p.Close() })
	return ts, p, func() *heldConn { mu.Lock(); defer mu.Unlock(); return hc }
}

// writeReturns reports whether a small Write on st returns within d while
// the connection's writes are held.
func writeReturns(t *testing.T, st *Stream, d time.Duration) (bool, chan error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := st.Write([]byte("ping"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		return true, nil
	case <-time.After(d):
		return false, done
	}
}

// TestLoneStreamWritesItself: a small Write on the connection's only
// stream writes its frame to the socket itself (it returns only once the
// socket took it); with a second stream open it is copied for the writer
// goroutine to gather with other frames and returns at once.
func TestLoneStreamWritesItself(t *testing.T) {
	ts, p, held := heldPool(t)
	st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	hc := held()
	echo := func(s *Stream) {
		t.Helper()
		got := make([]byte, 4)
		if _, err := io.ReadFull(s, got); err != nil || string(got) != "ping" {
			t.Fatalf("echo: %q, %v", got, err)
		}
	}
	// Let the connection's own frames (SETTINGS ACK, WINDOW_UPDATE) go out.
	time.Sleep(50 * time.Millisecond)

	hc.shut()
	returned, done := writeReturns(t, st, 100*time.Millisecond)
	hc.open()
	if returned {
		t.Fatal("a lone stream's Write returned while the socket held its frame")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	echo(st)

	// Under a write deadline the Write leaves the socket to the writer: a
	// blocked socket write of its own would not end at the deadline.
	st.SetWriteDeadline(time.Now().Add(time.Minute))
	mustReturnWhileHeld(t, hc, st, "under a write deadline, a lone stream's Write waited for the socket")
	echo(st)
	st.SetWriteDeadline(time.Time{})

	st2, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	time.Sleep(50 * time.Millisecond)
	mustReturnWhileHeld(t, hc, st, "with two streams open, a small Write waited for the socket")
	echo(st)
	st.Close()
}

// mustReturnWhileHeld fails the test with msg unless a small Write on st
// returns while hc holds the connection's writes.
func mustReturnWhileHeld(t *testing.T, hc *heldConn, st *Stream, msg string) {
	t.Helper()
	hc.shut()
	returned, done := writeReturns(t, st, 2*time.Second)
	hc.open()
	if !returned {
		<-done
		t.Fatal(msg)
	}
}
