package relay

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// waitParked waits until n directions of the relay counted by ctr are
// parked.
func waitParked(t *testing.T, ctr *Counters, n int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ctr.Parked.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked, want %d", ctr.Parked.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func exchange(t *testing.T, from, to io.ReadWriter, msg string) {
	t.Helper()
	if _, err := from.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(to, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != msg {
		t.Fatalf("got %q, want %q", buf, msg)
	}
}

// TestIdleRelayParksAndWakes checks that an idle relay gives up its
// goroutines, that bytes in either direction wake it with nothing lost,
// and that it parks again and still ends cleanly.
func TestIdleRelayParksAndWakes(t *testing.T) {
	for _, m := range []mode{
		{name: "observe", opts: Options{Observe: true}},
		{name: "buffer", wrap: func(c net.Conn) net.Conn { return plainConnSC{c.(*net.TCPConn)} }},
	} {
		t.Run(m.name, func(t *testing.T) {
			h := setup(t, m)
			ctr := new(Counters)
			opts := m.opts
			opts.Counters, opts.ParkAfter, opts.DisableSplice = ctr, 50*time.Millisecond, true
			before := runtime.NumGoroutine()
			h.start(context.Background(), Prefetched{}, opts)
			exchange(t, h.client, h.server, "ping")
			exchange(t, h.server, h.client, "pong")
			waitParked(t, ctr, 2)
			// Left: the harness's goroutine waiting in Relay, the sweeper and
			// the poller (both shared by all relays). Unparked, the two
			// directions would add two more.
			if g := runtime.NumGoroutine(); g > before+3 {
				t.Fatalf("%d goroutines with the relay parked, %d before it started", g, before)
			}
			for i := 0; i < 3; i++ {
				exchange(t, h.client, h.server, "client bytes after parking")
				exchange(t, h.server, h.client, "server bytes after parking")
				waitParked(t, ctr, 2)
			}
			// A half-close wakes the parked direction, which passes it on.
			if err := h.client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if n, err := h.server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("server read %d, %v; want EOF", n, err)
			}
			exchange(t, h.server, h.client, "after the half-close")
			h.server.Close()
			r := h.wait(t)
			if r.Err != nil || r.Parked < 8 {
				t.Fatalf("result %+v", r)
			}
			if r.BytesDownToUp != int64(len("ping")+3*len("client bytes after parking")) {
				t.Fatalf("bytes down to up %d", r.BytesDownToUp)
			}
		})
	}
}

// plainConnSC is plainConn that still offers its socket (like
// listener.OriginalConn), so it is read through the poller.
type plainConnSC struct{ *net.TCPConn }

func (c plainConnSC) Read(p []byte) (int, error)  { return c.TCPConn.Read(p) }
func (c plainConnSC) Write(p []byte) (int, error) { return c.TCPConn.Write(p) }

// TestParkedRelayEndsWithContext checks that cancelling the context ends a
// parked relay.
func TestParkedRelayEndsWithContext(t *testing.T) {
	h := setup(t, mode{})
	ctr := new(Counters)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.start(ctx, Prefetched{}, Options{Observe: true, Counters: ctr, ParkAfter: 50 * time.Millisecond})
	waitParked(t, ctr, 2)
	cancel()
	r := h.wait(t)
	if r.Err == nil || r.Parked != 2 {
		t.Fatalf("result %+v", r)
	}
	if n, err := h.client.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("client read %d, %v after the relay ended", n, err)
	}
}

// TestParkedWebSocketGoesAway checks that a drain reaches both peers of a
// parked WebSocket as close 1001, and the handshake completes.
func TestParkedWebSocketGoesAway(t *testing.T) {
	h := setup(t, mode{})
	serverGot := serveEcho(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dialing := dialThrough(ctx, h)
	away, goAway := context.WithCancel(context.Background())
	defer goAway()
	ctr := new(Counters)
	proxyWebSocket(t, h, Options{Observe: true, Counters: ctr, ParkAfter: 50 * time.Millisecond, GoingAway: away, GoingAwayReason: "drain"})
	c := (<-dialing).conn(t)
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hello" {
		t.Fatalf("echo %q %v", msg, err)
	}
	waitParked(t, ctr, 2)
	goAway()
	_, _, err := c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("client saw %v, want close 1001", err)
	}
	if got := <-serverGot; got != websocket.StatusGoingAway {
		t.Fatalf("server saw %v, want 1001", got)
	}
	r := h.wait(t)
	if !r.WentAway || r.CloseSent != 2 || r.Parked < 2 {
		t.Fatalf("result %+v", r)
	}
}

// TestTrimAfterParkingWave checks when the sweeper gives free memory back:
// once the number of parked directions is large and has stopped growing,
// not while it grows, not again for a small change, and not too often.
func TestTrimAfterParkingWave(t *testing.T) {
	trims := 0
	old := freeOSMemory
	freeOSMemory = func() { trims++ }
	defer func() { freeOSMemory = old }()
	var s sweeper
	step := func(parked int64, want int) {
		t.Helper()
		s.parked.Store(parked)
		s.maybeTrim()
		if trims != want {
			t.Fatalf("%d parked: %d trims, want %d", parked, trims, want)
		}
	}
	step(500, 0)  // few
	step(500, 0)  // few, settled
	step(3000, 0) // growing
	step(6000, 0) // growing
	step(6000, 1) // settled: trim
	step(6000, 1) // nothing new
	step(7000, 1) // growing
	step(7000, 1) // settled, but less than a quarter more than at the last trim
	step(9000, 1) // growing
	step(9000, 1) // settled and enough more, but within trimEvery
	s.trimmedAt = s.trimmedAt.Add(-trimEvery)
	step(9000, 2)
}
