package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/h2tunnel"
	"github.com/wsmesh/wsmesh/internal/testutil"
	"github.com/wsmesh/wsmesh/internal/wsobserve"
)

// h2Harness relays the streams of HTTP/2 connections, each to its own TCP
// socket, as a sidecar's inbound side does: the relay's downstream is the
// server stream (the source an inline direction reads), its upstream a
// socket whose far end is the test's peer.
type h2Harness struct {
	addr string
	pool *h2tunnel.Pool
	ctx  context.Context
	opts Options
	next chan *h2Relay
}

// h2Relay is one relayed stream: client writes into it, peer reads what
// the relay forwards.
type h2Relay struct {
	client *h2tunnel.Stream
	peer   *net.TCPConn
	result chan Result
	ends   atomic.Int32 // times the relay reported its end
	handle Handle
	cancel context.CancelFunc
}

func startH2Harness(t testing.TB, opts Options) *h2Harness {
	t.Helper()
	h := &h2Harness{opts: opts, next: make(chan *h2Relay)}
	srv := h2tunnel.NewServer(h2tunnel.ServerConfig{Handler: func(st *h2tunnel.ServerStream) {
		rr := <-h.next
		up, peer := testutil.TCPPair(t)
		rr.peer = peer
		if err := st.WriteResponse(200, nil, false); err != nil {
			t.Error(err)
			return
		}
		done := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		rr.cancel = cancel
		rr.handle = Start(ctx, st, up, Prefetched{}, h.opts, EndFunc(func(r Result) {
			if rr.ends.Add(1) == 1 {
				rr.result <- r
				close(done)
			}
		}))
		h.next <- nil // rr is set up
		<-done
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { _ = srv.ServeConn(ctx, c) })
		}
	})
	h.pool = h2tunnel.NewPool(h2tunnel.PoolConfig{})
	h.ctx, h.addr = ctx, ln.Addr().String()
	t.Cleanup(func() {
		h.pool.Close()
		srv.Close()
		cancel()
		ln.Close()
		wg.Wait()
	})
	return h
}

// open opens a stream (on the pool's connection to the harness) and
// returns it once its relay has started.
func (h *h2Harness) open(t testing.TB) *h2Relay {
	t.Helper()
	rr := &h2Relay{result: make(chan Result, 1)}
	go func() { h.next <- rr }()
	var err error
	rr.client, err = h.pool.OpenStream(h.ctx, h.addr, &h2tunnel.Request{Method: "POST", Scheme: "http", Authority: "relay.test", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rr.client.ReadResponse(h.ctx); err != nil {
		t.Fatal(err)
	}
	<-h.next
	return rr
}

// wait waits for the relay's end and checks it was reported once.
func (rr *h2Relay) wait(t testing.TB) Result {
	t.Helper()
	r := waitResult(t, rr.result)
	time.Sleep(50 * time.Millisecond)
	if n := rr.ends.Load(); n != 1 {
		t.Fatalf("the relay reported its end %d times", n)
	}
	return r
}

// TestInlineForwardKeepsOrder: bytes from an HTTP/2 stream reach the
// socket whole and in order, forwarded on the stream's reader goroutine
// while the socket takes them, and by a goroutine when it is full (the
// peer stops reading for a while); a half-close follows the last byte.
func TestInlineForwardKeepsOrder(t *testing.T) {
	h := startH2Harness(t, Options{ParkAfter: time.Hour, DisableSplice: true}).open(t)
	before := inlineForwards.Load()
	var sent bytes.Buffer
	for i := range 400 {
		msg := []byte(fmt.Sprintf("message %d|", i))
		msg = append(msg, bytes.Repeat([]byte{byte(i)}, i*37%3000)...)
		sent.Write(msg)
		if _, err := h.client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if i%40 == 0 {
			time.Sleep(2 * time.Millisecond) // let the relay go back to listening
		}
	}
	// More than the socket buffers hold while the peer is not reading:
	// forwards end short and a goroutine writes the rest.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	sent.Write(big)
	wrote := make(chan error, 1)
	go func() {
		_, err := h.client.Write(big)
		if err == nil {
			err = h.client.CloseWrite()
		}
		wrote <- err
	}()
	time.Sleep(200 * time.Millisecond)
	got, err := io.ReadAll(h.peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		i := 0
		for i < len(got) && i < sent.Len() && got[i] == sent.Bytes()[i] {
			i++
		}
		t.Fatalf("peer got %d bytes, want %d; first difference at %d", len(got), sent.Len(), i)
	}
	if n := inlineForwards.Load() - before; n == 0 {
		t.Fatal("no bytes were forwarded inline")
	}
	h.peer.Close()
	if r := h.wait(t); r.BytesDownToUp != int64(sent.Len()) {
		t.Fatalf("result counted %d bytes down to up, want %d", r.BytesDownToUp, sent.Len())
	}
}

// maskedFrame is a client's binary WebSocket frame carrying p.
func maskedFrame(p []byte) []byte {
	f := []byte{0x82}
	switch n := len(p); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	f = append(f, mask[:]...)
	for i, b := range p {
		f = append(f, b^mask[i&3])
	}
	return f
}

// TestInlineForwardGoesAwayAtFrameBoundary: a relay that goes away while
// frames flow through its inline direction writes its close frame to the
// socket between two whole frames, and nothing after it.
func TestInlineForwardGoesAwayAtFrameBoundary(t *testing.T) {
	h := startH2Harness(t, Options{Observe: true, ParkAfter: time.Hour, GoingAwayReason: "drain", GoingAwayTimeout: 200 * time.Millisecond}).open(t)
	handle := h.handle
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := h.client.Write(maskedFrame(bytes.Repeat([]byte{byte(i)}, 1+i*131%5000))); err != nil {
				return // the relay ended the stream
			}
		}
	})
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(h.peer)
		got <- b
	}()
	time.Sleep(100 * time.Millisecond)
	handle.GoAway()
	var b []byte
	select {
	case b = <-got:
	case <-time.After(testTimeout):
		t.Fatal("the peer's stream did not end")
	}
	close(stop)
	wg.Wait()
	var o wsobserve.Observer
	o.Feed(b)
	code, reason, ok := o.Close()
	if v := o.Violation(); v != 0 {
		t.Fatalf("the peer's %d bytes are not whole frames: %v", len(b), v)
	}
	if !ok || code != wsobserve.CloseGoingAway || reason != "drain" {
		t.Fatalf("close frame %v %d %q, want 1001 drain", ok, code, reason)
	}
	if !o.FrameBoundary() {
		t.Fatal("the peer's stream ends inside a frame")
	}
	// The close frame (masked: the peer is a server) ends the stream.
	if i := bytes.LastIndex(b, []byte{0x88, 0x80 | 7}); i < 0 || len(b)-i != 2+4+7 {
		t.Fatalf("close frame at %d of %d bytes, want the last %d", i, len(b), 2+4+7)
	}
	if o.Frames() < 10 {
		t.Fatalf("only %d frames crossed before going away", o.Frames())
	}
	h.wait(t)
}

// TestInlineForwardNeverBlocksTheReader: a stream whose upstream peer does
// not read must not hold up another stream of the same HTTP/2 connection
// (the connection's reader forwards for both, and must never wait).
func TestInlineForwardNeverBlocksTheReader(t *testing.T) {
	h := startH2Harness(t, Options{ParkAfter: time.Hour})
	stuck, live := h.open(t), h.open(t)
	go func() { _, _ = stuck.client.Write(bytes.Repeat([]byte("x"), 16<<20)) }()
	time.Sleep(300 * time.Millisecond)
	for i := range 200 {
		msg := []byte(fmt.Sprintf("message %d", i))
		if _, err := live.client.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		_ = live.peer.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(live.peer, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: got %q, %v", i, got, err)
		}
	}
	stuck.cancel()
	live.cancel()
	if r := stuck.wait(t); !errors.Is(r.Err, context.Canceled) {
		t.Fatalf("stuck relay ended with %v, want its context's end", r.Err)
	}
	live.wait(t)
}

// TestInlineForwardWithParkingChurn: with the sweeper turning listening
// directions into parked ones between bursts, bytes keep their order and
// count, the relay ends once, and the parked count comes back.
func TestInlineForwardWithParkingChurn(t *testing.T) {
	base := Parked()
	rr := startH2Harness(t, Options{ParkAfter: time.Millisecond, DisableSplice: true}).open(t)
	var sent bytes.Buffer
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(rr.peer)
		got <- b
	}()
	for i := range 120 {
		msg := []byte(fmt.Sprintf("<%d>", i))
		msg = append(msg, bytes.Repeat([]byte{byte(i)}, i*53%70000)...)
		sent.Write(msg)
		if _, err := rr.client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			time.Sleep(time.Duration(i%40) * time.Millisecond)
		}
		if i == 40 || i == 80 {
			// Idle past a sweep: the listening direction is counted parked.
			time.Sleep(2 * sweepInterval)
			if Parked() <= base {
				t.Fatalf("Parked() = %d while the relay is idle, want more than %d", Parked(), base)
			}
		}
	}
	if err := rr.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, sent.Bytes()) {
		t.Fatalf("peer got %d bytes, want %d", len(b), sent.Len())
	}
	rr.peer.Close()
	res := rr.wait(t)
	if res.BytesDownToUp != int64(sent.Len()) || res.Parked < 4 { // each direction's first wait, and the inline one at each pause
		t.Fatalf("counted %d bytes down to up (want %d), parked %d times", res.BytesDownToUp, sent.Len(), res.Parked)
	}
	if n := Parked(); n != base {
		t.Fatalf("Parked() = %d after the relay ended, want %d", n, base)
	}
}

// TestInlineForwardEnds: a relay whose inline direction is listening, or
// writing the rest of a forward to a peer that does not read, ends once,
// with the right cause, however it ends.
func TestInlineForwardEnds(t *testing.T) {
	for _, how := range []string{"cancel while writing", "cancel", "reset", "half-close", "idle timeout"} {
		t.Run(how, func(t *testing.T) {
			opts := Options{ParkAfter: time.Hour, Observe: true}
			if how == "idle timeout" {
				opts.IdleTimeout = 300 * time.Millisecond
			}
			rr := startH2Harness(t, opts).open(t)
			hello := maskedFrame([]byte("hello"))
			if _, err := rr.client.Write(hello); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(rr.peer, make([]byte, len(hello))); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // listening now
			var res Result
			switch how {
			case "cancel while writing":
				go func() { _, _ = rr.client.Write(maskedFrame(bytes.Repeat([]byte("y"), 16<<20))) }()
				time.Sleep(300 * time.Millisecond)
				rr.cancel()
				if res = rr.wait(t); !errors.Is(res.Err, context.Canceled) {
					t.Fatalf("ended with %v, want its context's end", res.Err)
				}
			case "cancel":
				rr.cancel()
				if res = rr.wait(t); !errors.Is(res.Err, context.Canceled) {
					t.Fatalf("ended with %v, want its context's end", res.Err)
				}
			case "reset":
				rr.client.Reset(0x8) // CANCEL
				var se *h2tunnel.StreamError
				if res = rr.wait(t); !errors.As(res.Err, &se) {
					t.Fatalf("ended with %v, want the stream's reset", res.Err)
				}
			case "half-close":
				if err := rr.client.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if b, err := io.ReadAll(rr.peer); err != nil || len(b) != 0 {
					t.Fatalf("peer read %d more bytes, %v; want EOF", len(b), err)
				}
				rr.peer.Close()
				if res = rr.wait(t); res.Err != nil || res.FirstEOF != SideDownstream {
					t.Fatalf("ended with %v, first EOF %v; want a clean end, downstream first", res.Err, res.FirstEOF)
				}
			case "idle timeout":
				// The peer gets a close frame (1001); it answers.
				b := make([]byte, 64)
				_ = rr.peer.SetReadDeadline(time.Now().Add(3 * time.Second))
				if n, err := rr.peer.Read(b); err != nil || n < 2 || b[0] != 0x88 {
					t.Fatalf("peer read %x, %v; want a close frame", b[:n], err)
				}
				_, _ = rr.peer.Write([]byte{0x88, 0x02, 0x03, 0xe9})
				if res = rr.wait(t); !res.IdleTimedOut {
					t.Fatalf("result %+v, want an idle timeout", res)
				}
			}
		})
	}
}
