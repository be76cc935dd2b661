package h2tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawConn is a hand-driven HTTP/2 client for abuse tests.
type rawConn struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newRaw(t, c)
}

func newRaw(t *testing.T, c net.Conn) *rawConn {
	r := &rawConn{t: t, c: c}
	r.fr = http2.NewFramer(c, c)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.fr.MaxHeaderListSize = 1 << 20
	r.enc = hpack.NewEncoder(&r.buf)
	io.WriteString(c, http2.ClientPreface)
	r.fr.WriteSettings()
	return r
}

func (r *rawConn) block(fields ...hpack.HeaderField) []byte {
	r.buf.Reset()
	for _, f := range fields {
		r.enc.WriteField(f)
	}
	return bytes.Clone(r.buf.Bytes())
}

func getFields(path string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "x"}, {Name: ":path", Value: path},
	}, extra...)
}

// next reads frames until want returns true; it fails on timeout or EOF.
func (r *rawConn) next(want func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("reading: %v", err)
		}
		if want(f) {
			return f
		}
	}
}

func isGoAway(code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == code
	}
}

// expectGoAway reads until a GOAWAY and checks its code; the connection
// must then close.
func (r *rawConn) expectGoAway(code http2.ErrCode) {
	r.t.Helper()
	g := r.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if g.ErrCode != code {
		r.t.Fatalf("GOAWAY %v (%s), want %v", g.ErrCode, g.DebugData(), code)
	}
	for {
		if _, err := r.fr.ReadFrame(); err != nil {
			return // closed
		}
	}
}

func TestRapidResetCalmed(t *testing.T) {
	ts := startServer(t, ServerConfig{AllowConnect: true, MaxResetsPerSecond: 100, Handler: func(st *ServerStream) {
		<-st.Context().Done() // a handler doing slow work
	}})
	r := dialRaw(t, ts.addr)
	blk := r.block(getFields("/")...)
	// Many streams opened and cancelled at once, as CVE-2023-44487 does.
	go func() {
		for id := uint32(1); id < 20000; id += 2 {
			if r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndHeaders: true}) != nil {
				return
			}
			if r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				return
			}
		}
	}()
	r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	ts.stop()
	ss := ts.srv.Stats()
	if ss.CalmedConns != 1 || ss.PeerResets > 200 || ss.StreamsAccepted > 300 {
		t.Errorf("server stats %+v", ss)
	}
}

func TestContinuationFlood(t *testing.T) {
	ts := startServer(t, ServerConfig{Handler: echoHandler})
	t.Run("many empty CONTINUATION frames", func(t *testing.T) {
		r := dialRaw(t, ts.addr)
		blk := r.block(getFields("/")...)
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:1], EndStream: true})
		for i := 0; i < 100000; i++ {
			if r.fr.WriteContinuation(1, false, nil) != nil {
				break
			}
		}
		r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("endless header block", func(t *testing.T) {
		r := dialRaw(t, ts.addr)
		// A literal with a 1 MiB value, sent 16 KiB at a time.
		blk := r.block(getFields("/", hpack.HeaderField{Name: "x-big", Value: strings.Repeat("a", 1<<20)})...)
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:16384], EndStream: true})
		go func() {
			for off := 16384; off < len(blk); off += 16384 {
				if r.fr.WriteContinuation(1, false, blk[off:min(off+16384, len(blk))]) != nil {
					return
				}
			}
		}()
		r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	})
}

func TestOversizedHeaderList(t *testing.T) {
	ts := startServer(t, ServerConfig{MaxHeaderListSize: 16 << 10, Handler: echoHandler})
	r := dialRaw(t, ts.addr)
	// 40 KiB of fields: over the 16 KiB list limit, within the block bound.
	blk := r.block(getFields("/", hpack.HeaderField{Name: "cookie", Value: strings.Repeat("c", 40<<10)})...)
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:16384]})
	for off := 16384; off < len(blk); off += 16384 {
		end := min(off+16384, len(blk))
		r.fr.WriteContinuation(1, end == len(blk), blk[off:end])
	}
	h := r.next(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).(*http2.MetaHeadersFrame)
	if h.StreamID != 1 || h.PseudoValue("status") != "431" || !h.StreamEnded() {
		t.Fatalf("answer %v status %q", h.Header(), h.PseudoValue("status"))
	}
	rst := r.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeNo {
		t.Errorf("RST_STREAM %v %v", rst.StreamID, rst.ErrCode)
	}
	// The connection (and its HPACK state) is still good.
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: r.block(getFields("/ok")...), EndStream: true, EndHeaders: true})
	h = r.next(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).(*http2.MetaHeadersFrame)
	if h.StreamID != 3 || h.PseudoValue("status") != "200" {
		t.Fatalf("second request: stream %d status %q", h.StreamID, h.PseudoValue("status"))
	}
	if ss := ts.srv.Stats(); ss.StreamsRejected != 1 {
		t.Errorf("stats %+v", ss)
	}
}

// gatedConn blocks the server's writes until opened, so that a peer that
// never reads can be simulated deterministically.
type gatedConn struct {
	net.Conn
	open chan struct{}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	<-g.open
	return g.Conn.Write(p)
}

// CloseWrite lets the server half-close after its GOAWAY, as it does on a
// plain TCP connection.
func (g *gatedConn) CloseWrite() error {
	return g.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

func TestControlFrameFlood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flood func(fr *http2.Framer) error
	}{
		{"SETTINGS", func(fr *http2.Framer) error { return fr.WriteSettings() }},
		{"PING", func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := NewServer(ServerConfig{Handler: echoHandler})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			gate := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- err
					return
				}
				done <- srv.ServeConn(context.Background(), &gatedConn{Conn: c, open: gate})
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := newRaw(t, c)
			for i := 0; i < 2*maxQueuedControlFrames; i++ {
				if tc.flood(r.fr) != nil {
					break
				}
			}
			// Wait until the server has detected the flood (its writes are
			// still held back), then let it write.
			deadline := time.Now().Add(10 * time.Second)
			for {
				calm := false
				for _, sc := range srv.snapshot() {
					calm = calm || sc.calm.Load()
				}
				if calm {
					break
				}
				if time.Now().After(deadline) {
					close(gate)
					t.Fatal("flood not detected")
				}
				time.Sleep(time.Millisecond)
			}
			close(gate)
			r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
			c.Close() // the server takes in what is left until this end closes
			if err := <-done; err == nil || !strings.Contains(err.Error(), "ENHANCE_YOUR_CALM") {
				t.Errorf("ServeConn: %v", err)
			}
			if ss := srv.Stats(); ss.CalmedConns != 1 {
				t.Errorf("stats %+v", ss)
			}
		})
	}
}

func TestRefusedStreamBeyondLimit(t *testing.T) {
	block := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(block) })
	ts := startServer(t, ServerConfig{MaxConcurrentStreams: 2, Handler: func(st *ServerStream) {
		select {
		case <-block:
		case <-st.Context().Done():
		}
		st.WriteResponse(200, nil, true)
	}})
	r := dialRaw(t, ts.addr)
	blk := r.block(getFields("/")...)
	for id := uint32(1); id <= 5; id += 2 {
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true})
	}
	rst := r.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	if rst.StreamID != 5 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("RST_STREAM %d %v", rst.StreamID, rst.ErrCode)
	}
	once.Do(func() { close(block) })

	// The pool retries a refused stream transparently.
	p := NewPool(PoolConfig{})
	defer p.Close()
	ctx := testCtx(t, 10*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := p.RoundTrip(ctx, ts.addr, &Request{Method: "GET", Authority: "x", Path: "/", NoBody: true})
			if err != nil {
				var se *StreamError
				if !errors.As(err, &se) {
					t.Error(err)
				}
				return
			}
			st.Close()
		}()
	}
	wg.Wait()
}
