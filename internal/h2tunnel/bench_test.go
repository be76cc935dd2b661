package h2tunnel

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// benchPair opens one tunnel stream between a Pool and a Server on
// loopback with the given windows and frame size (0: defaults).
func benchPair(b *testing.B, streamWin, connWin, frame uint32, handler func(*ServerStream)) (*Pool, *testServer) {
	ts := startServer(b, ServerConfig{AllowConnect: true, Handler: handler,
		InitialStreamWindow: streamWin, InitialConnWindow: connWin, MaxFrameSize: frame})
	p := NewPool(PoolConfig{InitialStreamWindow: streamWin, InitialConnWindow: connWin, MaxFrameSize: frame})
	b.Cleanup(func() { p.Close() })
	return p, ts
}

func discardHandler(st *ServerStream) {
	st.WriteResponse(200, nil, false)
	buf := make([]byte, 64<<10)
	for {
		if _, err := st.Read(buf); err != nil {
			break
		}
	}
	st.CloseWrite()
}

var windowConfigs = []struct {
	name              string
	stream, conn, frm uint32
}{
	{"win=64KiB/frame=16KiB", 65535, 65535, 16384},
	{"win=64KiB/frame=64KiB", 65535, 65535, 65536},
	{"win=1MiB/frame=64KiB", 1 << 20, 16 << 20, 65536},
	{"win=4MiB/frame=16KiB", 4 << 20, 32 << 20, 16384},
	{"win=4MiB/frame=64KiB(default)", 0, 0, 0},
	{"win=4MiB/frame=256KiB", 4 << 20, 32 << 20, 256 << 10},
	{"win=16MiB/frame=64KiB", 16 << 20, 64 << 20, 65536},
}

// BenchmarkStreamThroughput: one stream, 64 KiB writes, client → server.
func BenchmarkStreamThroughput(b *testing.B) {
	for _, wc := range windowConfigs {
		b.Run(wc.name, func(b *testing.B) {
			p, ts := benchPair(b, wc.stream, wc.conn, wc.frm, discardHandler)
			st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := st.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			st.CloseWrite()
			io.Copy(io.Discard, st) // the server has read everything
			b.StopTimer()
			st.Close()
		})
	}
}

// BenchmarkStreamThroughputParallel: 8 streams on one connection.
func BenchmarkStreamThroughputParallel(b *testing.B) {
	for _, wc := range windowConfigs {
		b.Run(wc.name, func(b *testing.B) {
			p, ts := benchPair(b, wc.stream, wc.conn, wc.frm, discardHandler)
			const n = 8
			streams := make([]*Stream, n)
			for i := range streams {
				st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
				if err != nil {
					b.Fatal(err)
				}
				streams[i] = st
			}
			b.SetBytes(64 << 10)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for i, st := range streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 64<<10)
					for j := i; j < b.N; j += n {
						if _, err := st.Write(buf); err != nil {
							b.Error(err)
							return
						}
					}
					st.CloseWrite()
					io.Copy(io.Discard, st)
				}()
			}
			wg.Wait()
			b.StopTimer()
		})
	}
}

// BenchmarkPingPong: a 64-byte message echoed over one stream.
func BenchmarkPingPong(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			p, ts := benchPair(b, 0, 0, 0, echoHandler)
			st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
			if err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, size)
			got := make([]byte, size)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := st.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(st, got); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			st.CloseWrite()
			io.Copy(io.Discard, st)
		})
	}
}

// BenchmarkRoundTripGET: a whole plain request per iteration.
func BenchmarkRoundTripGET(b *testing.B) {
	p, ts := benchPair(b, 0, 0, 0, echoHandler)
	req := &Request{Method: "GET", Authority: "x", Path: "/", NoBody: true}
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st, err := p.RoundTrip(context.Background(), ts.addr, req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := st.Read(buf); err != nil {
				break
			}
		}
		st.Close()
	}
}

// delayConn delays every write by a fixed time (unbounded bandwidth), to
// model a network round trip between sidecars on loopback.
type delayConn struct {
	net.Conn
	delay  time.Duration
	mu     sync.Mutex
	closed bool
	ch     chan delayedWrite
	done   chan struct{}
}

type delayedWrite struct {
	at time.Time
	b  []byte
}

func newDelayConn(c net.Conn, d time.Duration) *delayConn {
	dc := &delayConn{Conn: c, delay: d, ch: make(chan delayedWrite, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(dc.done)
		for w := range dc.ch {
			time.Sleep(time.Until(w.at))
			if _, err := dc.Conn.Write(w.b); err != nil {
				for range dc.ch {
				}
				return
			}
		}
	}()
	return dc
}

func (d *delayConn) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, net.ErrClosed
	}
	d.ch <- delayedWrite{time.Now().Add(d.delay), bytes.Clone(p)}
	return len(p), nil
}

func (d *delayConn) Close() error {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		close(d.ch)
	}
	d.mu.Unlock()
	err := d.Conn.Close()
	<-d.done
	return err
}

// BenchmarkStreamThroughputRTT: one stream, 64 KiB writes, with 1 ms
// added to the client→server direction (so the window-update round trip is
// ~1 ms, like sidecars on different nodes).
func BenchmarkStreamThroughputRTT(b *testing.B) {
	for _, wc := range []struct {
		name              string
		stream, conn, frm uint32
	}{
		{"win=64KiB", 65535, 65535, 16384},
		{"win=1MiB", 1 << 20, 16 << 20, 65536},
		{"win=4MiB(default)", 0, 0, 0},
		{"win=16MiB", 16 << 20, 64 << 20, 65536},
	} {
		b.Run(wc.name, func(b *testing.B) {
			ts := startServer(b, ServerConfig{AllowConnect: true, Handler: discardHandler,
				InitialStreamWindow: wc.stream, InitialConnWindow: wc.conn, MaxFrameSize: wc.frm})
			p := NewPool(PoolConfig{InitialStreamWindow: wc.stream, InitialConnWindow: wc.conn, MaxFrameSize: wc.frm,
				Dial: func(ctx context.Context, addr string) (net.Conn, error) {
					var d net.Dialer
					c, err := d.DialContext(ctx, "tcp", addr)
					if err != nil {
						return nil, err
					}
					return newDelayConn(c, time.Millisecond), nil
				}})
			defer p.Close()
			st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := st.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			st.CloseWrite()
			io.Copy(io.Discard, st)
			b.StopTimer()
			st.Close()
		})
	}
}
