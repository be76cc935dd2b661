package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// wsStream is a run of masked 1 KiB binary frames, so the observer has real
// headers to parse rather than stopping at the first invalid byte.
func wsStream(total int) []byte {
	f := []byte{0x82, 0x80 | 126}
	f = binary.BigEndian.AppendUint16(f, 1024)
	f = append(f, 1, 2, 3, 4)
	f = append(f, bytes.Repeat([]byte{0x5a}, 1024)...)
	return bytes.Repeat(f, total/len(f))
}

// plainCopyPair is the baseline: two io.Copy goroutines, as most Go proxies
// relay (io.Copy between *net.TCPConn splices too).
func plainCopyPair(down, up *net.TCPConn) {
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, down); _ = up.CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(down, up); _ = down.CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
	down.Close()
	up.Close()
}

// benchCase starts what relays a benchmark's harness.
type benchCase struct {
	name string
	run  func(h *harness)
}

// baselineCase relays with plainCopyPair.
var baselineCase = benchCase{"baseline-iocopy", func(h *harness) {
	go func() { plainCopyPair(h.down.(*net.TCPConn), h.up.(*net.TCPConn)); h.result <- Result{} }()
}}

// benchHarness is a harness without the tests' deadlines.
func benchHarness(b *testing.B) *harness {
	h := setup(b, mode{})
	for _, conn := range []*net.TCPConn{h.client, h.server} {
		_ = conn.SetDeadline(noDeadline)
	}
	return h
}

// roundTrips writes msg to w and reads len(buf) bytes from r, b.N times.
func roundTrips(b *testing.B, w io.Writer, r io.Reader, msg, buf []byte) {
	for range b.N {
		if _, err := w.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelay pushes data one way through one relayed loopback
// connection. Compare ns/op of each case with baseline-iocopy.
func BenchmarkRelay(b *testing.B) {
	chunk := wsStream(1 << 20)
	cases := []benchCase{
		baselineCase,
		{"relay-splice", func(h *harness) { h.start(context.Background(), Prefetched{}, Options{}) }},
		{"relay-buffer", func(h *harness) { h.start(context.Background(), Prefetched{}, Options{DisableSplice: true}) }},
		{"relay-observe", func(h *harness) { h.start(context.Background(), Prefetched{}, Options{Observe: true}) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h := benchHarness(b)
			c.run(h)
			drained := make(chan int64)
			go func() { n, _ := io.Copy(io.Discard, h.server); drained <- n }()
			b.SetBytes(int64(len(chunk)))
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				if _, err := h.client.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			_ = h.client.CloseWrite()
			n := <-drained
			b.StopTimer()
			// Process CPU (relay + test peers): what splice saves shows here even
			// where loopback throughput is bound by the peers.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			_ = h.server.CloseWrite()
			r := h.wait(b)
			if n != int64(b.N*len(chunk)) {
				b.Fatalf("drained %d of %d", n, b.N*len(chunk))
			}
			if r.Down != nil && r.Down.Violation() != 0 {
				b.Fatal(r.Down.Violation())
			}
		})
	}
}

func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkRelayH2Inline sends 64-byte WebSocket frames, one at a time,
// from an HTTP/2 stream through a relay to a socket: the path a server
// sidecar's inbound takes, where the connection's reader forwards each
// frame itself. inline/op is the share of frames forwarded that way.
func BenchmarkRelayH2Inline(b *testing.B) {
	rr := startH2Harness(b, Options{Observe: true, ParkAfter: time.Hour}).open(b)
	msg := maskedFrame(bytes.Repeat([]byte{0x5a}, 64))
	buf := make([]byte, len(msg))
	before := inlineForwards.Load()
	b.ReportAllocs()
	b.ResetTimer()
	roundTrips(b, rr.client, rr.peer, msg, buf)
	b.StopTimer()
	b.ReportMetric(float64(inlineForwards.Load()-before)/float64(b.N), "inline/op")
	rr.cancel()
	rr.wait(b)
}

// BenchmarkRelayPingPong sends a 1 KiB WebSocket frame through a relayed
// loopback connection and waits for the answer, one at a time: a message's
// round trip through both directions, each waking for it, reading it
// short and waiting again (what a sidecar pays per message of a chatty
// WebSocket). Compare with baseline-iocopy.
func BenchmarkRelayPingPong(b *testing.B) {
	ping := wsStream(1032) // one masked 1 KiB frame, client to server
	pong := append([]byte{0x82, 126, 4, 0}, bytes.Repeat([]byte{0x5a}, 1024)...)
	cases := []benchCase{
		baselineCase,
		{"relay-observe", func(h *harness) {
			h.start(context.Background(), Prefetched{}, Options{Observe: true, ParkAfter: time.Hour})
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h := benchHarness(b)
			c.run(h)
			served := make(chan error, 1)
			go func() {
				buf := make([]byte, len(ping))
				for {
					if _, err := io.ReadFull(h.server, buf); err != nil {
						served <- nil // the client's half-close
						return
					}
					if _, err := h.server.Write(pong); err != nil {
						served <- err
						return
					}
				}
			}()
			buf := make([]byte, len(pong))
			cpu0 := cpuTime()
			b.ResetTimer()
			roundTrips(b, h.client, h.client, ping, buf)
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			_ = h.client.CloseWrite()
			if err := <-served; err != nil {
				b.Fatal(err)
			}
			_ = h.server.CloseWrite()
			r := h.wait(b)
			if r.Down != nil && (r.Down.Violation() != 0 || r.Up.Violation() != 0) {
				b.Fatal(r.Down.Violation(), r.Up.Violation())
			}
		})
	}
}
