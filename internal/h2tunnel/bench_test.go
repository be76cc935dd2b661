package h2tunnel

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// BenchmarkPingPong: a 64-byte (and a 1 KiB) message echoed over one
// stream; also reports the median round trip.
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
			rtts := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			b.ResetTimer()
			pc, start := sampleProc(), time.Now()
			t0 := start
			for i := 0; i < b.N; i++ {
				if _, err := st.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(st, got); err != nil {
					b.Fatal(err)
				}
				if len(rtts) < cap(rtts) {
					t1 := time.Now()
					rtts = append(rtts, t1.Sub(t0))
					t0 = t1
				}
			}
			b.StopTimer()
			pc.report(b, start, b.N)
			slices.Sort(rtts)
			b.ReportMetric(float64(rtts[len(rtts)/2].Nanoseconds())/1e3, "p50-µs")
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

// procCounters samples this process's CPU time (getrusage) and read(2)
// and write(2) counts (/proc/self/io syscr, syscw; 0 where unavailable).
type procCounters struct {
	cpu           time.Duration
	reads, writes int64
}

func sampleProc() procCounters {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	pc := procCounters{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	if b, err := os.ReadFile("/proc/self/io"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "syscw: "); ok {
				pc.writes, _ = strconv.ParseInt(v, 10, 64)
			} else if v, ok := strings.CutPrefix(line, "syscr: "); ok {
				pc.reads, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return pc
}

// report adds msg/s, CPU µs per message and read(2)/write(2) calls per message
// (client and server ends together: both run in this process).
func (pc procCounters) report(b *testing.B, start time.Time, msgs int) {
	end := sampleProc()
	el := time.Since(start)
	if msgs == 0 || el <= 0 {
		return
	}
	b.ReportMetric(float64(msgs)/el.Seconds(), "msg/s")
	b.ReportMetric(float64((end.cpu-pc.cpu).Microseconds())/float64(msgs), "cpu-µs/msg")
	b.ReportMetric(float64(end.writes-pc.writes)/float64(msgs), "writes/msg")
	b.ReportMetric(float64(end.reads-pc.reads)/float64(msgs), "reads/msg")
}

// setCoalesce sets coalesceWrites for one benchmark and restores it after.
func setCoalesce(b *testing.B, on bool) {
	prev := coalesceWrites.Load()
	coalesceWrites.Store(on)
	b.Cleanup(func() { coalesceWrites.Store(prev) })
}

// BenchmarkManyStreamsPingPong: 64 streams on one connection, each with
// one 1 KiB message in flight, echoed by the server (the shape of bench
// throughput mode through two sidecars). One op is one round trip.
// coalesce=off is the writer before frames were copied and gathered (one
// write(2) per frame when the writer is idle).
func BenchmarkManyStreamsPingPong(b *testing.B) {
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("coalesce=%v", on), func(b *testing.B) {
			setCoalesce(b, on)
			manyStreamsPingPong(b, 64, 1024)
		})
	}
}

func manyStreamsPingPong(b *testing.B, streams, size int) {
	p, ts := benchPair(b, 0, 0, 0, echoHandler)
	sts := make([]*Stream, streams)
	for i := range sts {
		st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
		if err != nil {
			b.Fatal(err)
		}
		sts[i] = st
	}
	if s := p.Stats(); s.Dialed != 1 {
		b.Fatalf("streams spread over %d connections", s.Dialed)
	}
	b.ReportAllocs()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	pc, start := sampleProc(), time.Now()
	for _, st := range sts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, size)
			got := make([]byte, size)
			for next.Add(1) <= int64(b.N) {
				if _, err := st.Write(msg); err != nil {
					b.Error(err)
					return
				}
				if _, err := io.ReadFull(st, got); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	pc.report(b, start, b.N)
	for _, st := range sts {
		st.CloseWrite()
		io.Copy(io.Discard, st)
	}
}

// BenchmarkPingPongCoalesceAB: one stream, 64 B and 1 KiB ping-pong,
// alternating batches of 500 round trips with coalesceWrites on and off
// on the same connection, so that both see the same machine; reports
// the p50 and p90 round trip of each (b.N is ignored: run with
// -benchtime 1x).
func BenchmarkPingPongCoalesceAB(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			setCoalesce(b, true)
			p, ts := benchPair(b, 0, 0, 0, echoHandler)
			st, err := p.RoundTrip(context.Background(), ts.addr, wsRequest(ts.addr))
			if err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, size)
			got := make([]byte, size)
			var rtts [2][]time.Duration // off, on
			for round := 0; round < 200; round++ {
				on := round%2 == 1
				coalesceWrites.Store(on)
				m := rtts[round%2]
				for i := 0; i < 500; i++ {
					t0 := time.Now()
					if _, err := st.Write(msg); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(st, got); err != nil {
						b.Fatal(err)
					}
					m = append(m, time.Since(t0))
				}
				rtts[round%2] = m
			}
			for i, name := range []string{"off", "on"} {
				slices.Sort(rtts[i])
				n := len(rtts[i])
				b.ReportMetric(float64(rtts[i][n/2].Nanoseconds())/1e3, "p50-µs-"+name)
				b.ReportMetric(float64(rtts[i][n*9/10].Nanoseconds())/1e3, "p90-µs-"+name)
			}
			st.CloseWrite()
			io.Copy(io.Discard, st)
		})
	}
}
