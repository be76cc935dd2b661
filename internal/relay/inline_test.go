package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/h2tunnel"
	"github.com/wsmesh/wsmesh/internal/testutil"
	"github.com/wsmesh/wsmesh/internal/wsobserve"
)

// h2Relay is a relay from an HTTP/2 server stream (downstream, the source
// an inline direction reads) to a TCP socket (upstream), as a sidecar's
// inbound side runs one: client writes into the stream, peer is the
// upstream socket's far end.
type h2Relay struct {
	client *h2tunnel.Stream
	peer   *net.TCPConn
	result chan Result
	handle chan Handle
}

func startH2Relay(t *testing.T, opts Options) *h2Relay {
	t.Helper()
	up, peer := testutil.TCPPair(t)
	h := &h2Relay{peer: peer, result: make(chan Result, 1), handle: make(chan Handle, 1)}
	srv := h2tunnel.NewServer(h2tunnel.ServerConfig{Handler: func(st *h2tunnel.ServerStream) {
		if err := st.WriteResponse(200, nil, false); err != nil {
			t.Error(err)
			return
		}
		done := make(chan struct{})
		h.handle <- Start(context.Background(), st, up, Prefetched{}, opts, EndFunc(func(r Result) {
			h.result <- r
			close(done)
		}))
		<-done
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err == nil {
			_ = srv.ServeConn(ctx, c)
		}
	})
	pool := h2tunnel.NewPool(h2tunnel.PoolConfig{})
	t.Cleanup(func() {
		pool.Close()
		srv.Close()
		cancel()
		ln.Close()
		wg.Wait()
	})
	h.client, err = pool.OpenStream(ctx, ln.Addr().String(), &h2tunnel.Request{Method: "POST", Scheme: "http", Authority: "relay.test", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.ReadResponse(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *h2Relay) wait(t *testing.T) Result {
	t.Helper()
	return waitResult(t, h.result)
}

// TestInlineForwardKeepsOrder: bytes from an HTTP/2 stream reach the
// socket whole and in order, forwarded on the stream's reader goroutine
// while the socket takes them, and by a goroutine when it is full (the
// peer stops reading for a while); a half-close follows the last byte.
func TestInlineForwardKeepsOrder(t *testing.T) {
	h := startH2Relay(t, Options{ParkAfter: time.Hour, DisableSplice: true})
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
	h := startH2Relay(t, Options{Observe: true, ParkAfter: time.Hour, GoingAwayReason: "drain", GoingAwayTimeout: 200 * time.Millisecond})
	handle := <-h.handle
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
