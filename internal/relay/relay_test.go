package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsmesh/wsmesh/internal/testutil"
	"github.com/wsmesh/wsmesh/internal/wsobserve"
)

const testTimeout = 10 * time.Second

var noDeadline time.Time

// plainConn hides *net.TCPConn (so the relay cannot splice) but keeps
// CloseWrite, like a TLS connection or an HTTP/2 stream would.
type plainConn struct{ *net.TCPConn }

func (c plainConn) Read(p []byte) (int, error)  { return c.TCPConn.Read(p) }
func (c plainConn) Write(p []byte) (int, error) { return c.TCPConn.Write(p) }

// noHalfClose hides CloseWrite.
type noHalfClose struct{ net.Conn }

type mode struct {
	name string
	opts Options
	wrap func(net.Conn) net.Conn
}

var modes = []mode{
	{name: "splice"},
	{name: "nosplice", opts: Options{DisableSplice: true}},
	{name: "buffer", wrap: func(c net.Conn) net.Conn { return plainConn{c.(*net.TCPConn)} }},
	{name: "observe", opts: Options{Observe: true}},
}

// harness is client ⇄ [down | Relay | up] ⇄ server over loopback TCP.
type harness struct {
	client, server *net.TCPConn
	down, up       net.Conn
	result         chan Result
	cancel         context.CancelFunc
	handle         Handle
}

// setup connects the ends without starting the relay.
func setup(t testing.TB, m mode) *harness {
	t.Helper()
	client, down := testutil.TCPPair(t)
	up, server := testutil.TCPPair(t)
	h := &harness{client: client, server: server, down: down, up: up, result: make(chan Result, 1)}
	if m.wrap != nil {
		h.down, h.up = m.wrap(down), m.wrap(up)
	}
	deadline := time.Now().Add(testTimeout)
	for _, c := range []*net.TCPConn{client, server, down, up} {
		_ = c.SetDeadline(deadline) // bounds every test even if the relay misbehaves
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
		down.Close()
		up.Close()
		if h.cancel != nil {
			h.cancel()
		}
	})
	return h
}

func (h *harness) start(ctx context.Context, pre Prefetched, opts Options) {
	ctx, h.cancel = context.WithCancel(ctx)
	h.handle = Start(ctx, h.down, h.up, pre, opts, EndFunc(func(r Result) { h.result <- r }))
}

func start(t testing.TB, m mode, pre Prefetched) *harness {
	h := setup(t, m)
	h.start(context.Background(), pre, m.opts)
	return h
}

func (h *harness) wait(t testing.TB) Result {
	t.Helper()
	return waitResult(t, h.result)
}

// waitResult waits for a relay's Result on ch.
func waitResult(t testing.TB, ch <-chan Result) Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testTimeout):
		t.Fatal("relay did not end")
		return Result{}
	}
}

// sendAndHash writes n random bytes in random-sized pieces, half-closes and
// returns their hash.
func sendAndHash(c *net.TCPConn, n int) ([32]byte, error) {
	data := make([]byte, n)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	for len(data) > 0 {
		k := min(len(data), 1+int(data[0])*97)
		if _, err := c.Write(data[:k]); err != nil {
			return sum, err
		}
		data = data[k:]
	}
	return sum, c.CloseWrite()
}

func readAndHash(c net.Conn) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, n, err
}

func TestLargeDataBothWays(t *testing.T) {
	const size = 8 << 20
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			h := start(t, m, Prefetched{})
			var wg sync.WaitGroup
			var sentUp, sentDown, gotUp, gotDown [32]byte
			var nUp, nDown int64
			var errs [4]error
			wg.Go(func() { sentUp, errs[0] = sendAndHash(h.client, size) })
			wg.Go(func() { sentDown, errs[1] = sendAndHash(h.server, size+123) })
			wg.Go(func() { gotUp, nUp, errs[2] = readAndHash(h.server) })
			wg.Go(func() { gotDown, nDown, errs[3] = readAndHash(h.client) })
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if sentUp != gotUp || nUp != size || sentDown != gotDown || nDown != size+123 {
				t.Fatalf("data corrupted: up %d bytes match=%v, down %d bytes match=%v",
					nUp, sentUp == gotUp, nDown, sentDown == gotDown)
			}
			r := h.wait(t)
			if r.Err != nil || r.BytesDownToUp != size || r.BytesUpToDown != size+123 || r.FirstEOF == SideNone {
				t.Fatalf("result %+v", r)
			}
			if r.Spliced != (m.name == "splice") {
				t.Fatalf("Spliced = %v", r.Spliced)
			}
			if m.opts.Observe && (r.Down == nil || r.Up == nil || r.Down.Bytes() != size) {
				t.Fatalf("observers %+v %+v", r.Down, r.Up)
			}
		})
	}
}

func TestHalfClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ctr := new(Counters)
			m.opts.Counters = ctr
			h := start(t, m, Prefetched{})
			if _, err := h.client.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			if err := h.client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(h.server) // ends with the client's half-close
			if err != nil || string(got) != "request" {
				t.Fatalf("server read %q, %v", got, err)
			}
			// The client has stopped sending; the other direction still flows.
			for _, part := range []string{"response 1;", "response 2"} {
				time.Sleep(20 * time.Millisecond)
				if _, err := h.server.Write([]byte(part)); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.server.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err = io.ReadAll(h.client)
			if err != nil || string(got) != "response 1;response 2" {
				t.Fatalf("client read %q, %v", got, err)
			}
			r := h.wait(t)
			if r.Err != nil || r.FirstEOF != SideDownstream || r.BytesDownToUp != 7 || r.BytesUpToDown != 21 {
				t.Fatalf("result %+v", r)
			}
			if ctr.DownToUp.Load() != 7 || ctr.UpToDown.Load() != 21 || ctr.LastActivity.Load() == 0 {
				t.Fatalf("counters %d %d", ctr.DownToUp.Load(), ctr.UpToDown.Load())
			}
		})
	}
}

func TestEOFWithoutHalfCloseEndsRelay(t *testing.T) {
	h := setup(t, mode{})
	h.up = noHalfClose{h.up} // the client's EOF cannot be passed on
	h.start(context.Background(), Prefetched{}, Options{})
	if err := h.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(h.server); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(h.client); err != nil { // the relay closed both
		t.Fatal(err)
	}
	if r := h.wait(t); r.FirstEOF != SideDownstream || r.Err != nil {
		t.Fatalf("result %+v", r)
	}
}

func TestResetPropagation(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			h := start(t, m, Prefetched{})
			if _, err := h.client.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(h.server, buf); err != nil {
				t.Fatal(err)
			}
			_ = h.server.SetLinger(0)
			h.server.Close() // RST to the relay's upstream conn
			_, err := h.client.Read(buf)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read after upstream reset: %v, want ECONNRESET", err)
			}
			r := h.wait(t)
			var se *SideError
			if !errors.As(r.Err, &se) || se.Side != SideUpstream || !errors.Is(r.Err, syscall.ECONNRESET) {
				t.Fatalf("Err = %v", r.Err)
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			m.opts.IdleTimeout = idle
			// A machine that stalls the test for a whole idle period between
			// two exchanges lets the relay time out rightly: start over then.
			for attempt := 1; !idleTimeoutAttempt(t, m, idle); attempt++ {
				if attempt == 5 {
					t.Fatal("every attempt was stalled past the idle timeout, or timed out late")
				}
			}
		})
	}
}

// idleTimeoutAttempt keeps a relay busy with traffic every idle/5,
// alternating direction, then lets it time out. It reports false when the
// relay timed out during the traffic with the last write at least idle
// ago, which a machine that stalls the test can cause, and a relay timing
// out before its time cannot (its last activity came after that write),
// or when the end came over 2 s late, which a relay that is always late
// does in every attempt.
func idleTimeoutAttempt(t *testing.T, m mode, idle time.Duration) bool {
	wrote := time.Now() // the relay's activity starts after this, as after each write
	h := start(t, m, Prefetched{})
	buf := make([]byte, 1)
	for i := range 8 {
		time.Sleep(idle / 5)
		from, to := h.client, h.server
		if i%2 == 1 {
			from, to = h.server, h.client
		}
		prev := wrote
		wrote = time.Now()
		if _, err := from.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(to, buf); err != nil {
			r := h.wait(t)
			if since := time.Since(prev); r.IdleTimedOut && since >= idle {
				t.Logf("the relay timed out rightly: the machine stalled the test %v after a write", since)
				return false
			}
			t.Fatalf("relay ended during traffic: %v (result %+v)", err, r)
		}
	}
	r := h.wait(t)
	since := time.Since(wrote) // the relay's last activity came after the last write
	if !r.IdleTimedOut || r.Err != nil || since < idle {
		t.Fatalf("IdleTimedOut=%v Err=%v, %v after the last write", r.IdleTimedOut, r.Err, since)
	}
	if _, err := h.client.Read(buf); err != io.EOF {
		t.Fatalf("client read after idle close: %v", err)
	}
	if since > idle+2*time.Second {
		t.Logf("the relay ended %v after the last write: late, or the machine stalled the test", since)
		return false
	}
	return true
}

func TestContextCancel(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			h := setup(t, m)
			ctx, cancel := context.WithCancel(context.Background())
			h.start(ctx, Prefetched{}, m.opts)
			if _, err := h.client.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(h.server, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			cancel()
			r := h.wait(t)
			if !errors.Is(r.Err, context.Canceled) || r.IdleTimedOut {
				t.Fatalf("result %+v", r)
			}
			if _, err := io.ReadAll(h.client); err != nil {
				t.Fatalf("client: %v", err)
			}
			if _, err := io.ReadAll(h.server); err != nil {
				t.Fatalf("server: %v", err)
			}
		})
	}
}

func TestPrefetched(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			pre := Prefetched{Down: []byte("early-from-client;"), Up: []byte("early-from-server;")}
			h := start(t, m, pre)
			var wg sync.WaitGroup
			var toServer, toClient []byte
			wg.Go(func() { toServer, _ = io.ReadAll(h.server) })
			wg.Go(func() { toClient, _ = io.ReadAll(h.client) })
			_, _ = h.client.Write([]byte("late"))
			_, _ = h.server.Write([]byte("late"))
			_ = h.client.CloseWrite()
			_ = h.server.CloseWrite()
			wg.Wait()
			if string(toServer) != "early-from-client;late" || string(toClient) != "early-from-server;late" {
				t.Fatalf("server got %q, client got %q", toServer, toClient)
			}
			r := h.wait(t)
			if r.BytesDownToUp != 22 || r.BytesUpToDown != 22 {
				t.Fatalf("result %+v", r)
			}
		})
	}
}

// proxyWebSocket relays one WebSocket handshake head by head, as the sidecar
// does, and then hands the rest to Relay with whatever the readers buffered.
func proxyWebSocket(t *testing.T, h *harness, opts Options) {
	t.Helper()
	br := bufio.NewReader(h.down)
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Write(h.up); err != nil {
		t.Fatal(err)
	}
	ur := bufio.NewReader(h.up)
	resp, err := http.ReadResponse(ur, req)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if err := resp.Write(h.down); err != nil {
		t.Fatal(err)
	}
	deflate := strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	opts.PerMessageDeflate = deflate
	for _, o := range []*wsobserve.Observer{opts.DownObserver, opts.UpObserver} {
		if o != nil {
			o.PerMessageDeflate = deflate
		}
	}
	pre := Prefetched{Down: peekAll(br), Up: peekAll(ur)}
	h.start(context.Background(), pre, opts)
}

func peekAll(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return bytes.Clone(b)
}

func TestObserveRealWebSocket(t *testing.T) {
	for _, compress := range []websocket.CompressionMode{websocket.CompressionDisabled, websocket.CompressionContextTakeover} {
		t.Run(map[bool]string{true: "deflate", false: "plain"}[compress != websocket.CompressionDisabled], func(t *testing.T) {
			h := setup(t, mode{})
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: compress})
				if err != nil {
					return
				}
				defer c.CloseNow()
				for {
					typ, msg, err := c.Read(r.Context())
					if err != nil {
						return
					}
					if err := c.Write(r.Context(), typ, msg); err != nil {
						return
					}
				}
			})}
			ln := &oneConnListener{c: h.server, done: make(chan struct{})}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { _ = srv.Close() })

			dialDone := make(chan struct{})
			var c *websocket.Conn
			var dialErr error
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			go func() {
				defer close(dialDone)
				c, _, dialErr = websocket.Dial(ctx, "ws://wsmesh.test/echo", &websocket.DialOptions{
					CompressionMode: compress,
					HTTPClient: &http.Client{Transport: &http.Transport{
						DialContext: func(context.Context, string, string) (net.Conn, error) { return h.client, nil },
					}},
				})
			}()
			down, up := new(wsobserve.Observer), new(wsobserve.Observer)
			proxyWebSocket(t, h, Options{DownObserver: down, UpObserver: up})
			<-dialDone
			if dialErr != nil {
				t.Fatal(dialErr)
			}
			const n = 25
			for i := range n {
				msg := bytes.Repeat([]byte{byte('a' + i)}, 10+i*997)
				if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
					t.Fatal(err)
				}
				_, echo, err := c.Read(ctx)
				if err != nil || !bytes.Equal(echo, msg) {
					t.Fatalf("echo %d: %v", i, err)
				}
			}
			pingDone := make(chan error, 1)
			go func() { pingDone <- c.Ping(ctx) }()
			go func() { _, _, _ = c.Read(ctx) }() // reads the pong
			if err := <-pingDone; err != nil {
				t.Fatal(err)
			}
			if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				t.Logf("close: %v", err)
			}
			if want := compress != websocket.CompressionDisabled; down.PerMessageDeflate != want {
				t.Fatalf("permessage-deflate negotiated = %v, want %v", down.PerMessageDeflate, want)
			}
			r := h.wait(t)
			if r.Down != down || r.Up != up {
				t.Fatal("relay did not use the given observers")
			}
			ds, us := down.Stats(), up.Stats()
			if ds.Violation != wsobserve.NoViolation || us.Violation != wsobserve.NoViolation {
				t.Fatalf("violations: %v / %v", ds.Violation, us.Violation)
			}
			if ds.Messages != n || us.Messages != n || ds.Pings != 1 || us.Pongs != 1 {
				t.Fatalf("down %+v\nup %+v", ds, us)
			}
			if ds.CloseCode != 1000 || ds.CloseReason != "done" || us.CloseCode != 1000 {
				t.Fatalf("close: down %d %q, up %d", ds.CloseCode, ds.CloseReason, us.CloseCode)
			}
			if ds.Frames != n+2 || ds.Bytes != r.BytesDownToUp || us.Bytes != r.BytesUpToDown {
				t.Fatalf("frames/bytes: down %+v up %+v result %+v", ds, us, r)
			}
		})
	}
}

// serveEcho serves a WebSocket echo on h's server end; the returned
// channel gets the close status that ended it.
func serveEcho(t *testing.T, h *harness) <-chan websocket.StatusCode {
	got := make(chan websocket.StatusCode, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err == nil {
				err = c.Write(r.Context(), typ, msg)
			}
			if err != nil {
				got <- websocket.CloseStatus(err)
				return
			}
		}
	})}
	ln := &oneConnListener{c: h.server, done: make(chan struct{})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return got
}

type dialed struct {
	c   *websocket.Conn
	err error
}

func (d dialed) conn(t *testing.T) *websocket.Conn {
	t.Helper()
	if d.err != nil {
		t.Fatal(d.err)
	}
	return d.c
}

// dialThrough opens a WebSocket on h's client end; the handshake goes
// through once the relay (proxyWebSocket) runs.
func dialThrough(ctx context.Context, h *harness) <-chan dialed {
	ch := make(chan dialed, 1)
	go func() {
		c, _, err := websocket.Dial(ctx, "ws://wsmesh.test/echo", &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: &http.Transport{
				DialContext: func(context.Context, string, string) (net.Conn, error) { return h.client, nil },
			}},
		})
		ch <- dialed{c, err}
	}()
	return ch
}

// oneConnListener serves exactly one already-accepted connection.
type oneConnListener struct {
	c               net.Conn
	once, closeOnce sync.Once
	done            chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

func TestGoingAwaySendsCloseToBothPeers(t *testing.T) {
	for _, by := range []string{"context", "handle"} {
		t.Run(by, func(t *testing.T) { testGoingAway(t, by) })
	}
}

// testGoingAway sends a busy WebSocket away through Options.GoingAway
// ("context") or Handle.GoAway ("handle").
func testGoingAway(t *testing.T, by string) {
	h := setup(t, mode{})
	serverGot := serveEcho(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dialed := dialThrough(ctx, h)
	away, cancelAway := context.WithCancel(context.Background())
	defer cancelAway()
	opts := Options{Observe: true, GoingAwayReason: "sidecar draining"}
	goAway := cancelAway
	if by == "handle" {
		goAway = func() { h.handle.GoAway() }
	} else {
		opts.GoingAway = away
	}
	proxyWebSocket(t, h, opts)
	c := (<-dialed).conn(t)
	// Keep large messages flowing both ways so the close frames must be
	// placed between frames, not inside one.
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		msg := bytes.Repeat([]byte("x"), 24<<10) // under the default read limit
		for ctx.Err() == nil {
			if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
				return
			}
		}
	}()
	clientGot := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				clientGot <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	goAway()
	err := <-clientGot
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("client saw %v, want close 1001", err)
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) && ce.Reason != "sidecar draining" {
		t.Fatalf("reason %q", ce.Reason)
	}
	if got := <-serverGot; got != websocket.StatusGoingAway {
		t.Fatalf("server saw %v, want 1001", got)
	}
	r := h.wait(t)
	// Usually both close frames are ours. When the client answers ours and
	// hangs up before the relay reaches the second direction, its own close
	// frame (also 1001) is what the server hears, and one was ours.
	if !r.WentAway || r.CloseSent < 1 || r.CloseSent > 2 {
		t.Fatalf("result %+v", r)
	}
	if r.Down.Violation() != wsobserve.NoViolation || r.Up.Violation() != wsobserve.NoViolation {
		t.Fatalf("stream corrupted: %v %v", r.Down.Violation(), r.Up.Violation())
	}
	<-writerDone
}

func TestUpstreamLossSendsBadGatewayClose(t *testing.T) {
	h := setup(t, mode{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err == nil {
			_ = c.Write(r.Context(), typ, msg)
		}
		<-r.Context().Done()
	})}
	ln := &oneConnListener{c: h.server, done: make(chan struct{})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dialing := dialThrough(ctx, h)
	proxyWebSocket(t, h, Options{Observe: true})
	c := (<-dialing).conn(t)
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	// The upstream vanishes with a reset: the client hears why.
	_ = h.server.SetLinger(0)
	h.server.Close()
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1014 || ce.Reason != "upstream connection lost" {
		t.Fatalf("client saw %v, want close 1014", err)
	}
	r := h.wait(t)
	if r.CloseSent != 1 {
		t.Fatalf("result %+v", r)
	}
}

// TestGoingAwayIsNotHeldUpByAWritingCopyLoop arms going away while the
// upstream-to-downstream copy loop holds its direction's lock, as it does
// while writing a chunk to a downstream peer that reads slowly. The chunk
// that loop writes next must not go out ahead of the close frame: the
// frame is placed at its first boundary, whoever takes the lock first.
func TestGoingAwayIsNotHeldUpByAWritingCopyLoop(t *testing.T) {
	h := setup(t, mode{})
	h.start(context.Background(), Prefetched{}, Options{Observe: true, GoingAwayReason: "draining"})
	r := h.handle.r
	d := &r.u2d
	d.mu.Lock() // the copy loop, mid-write
	h.handle.GoAway()
	deadline := time.Now().Add(testTimeout)
	for !r.awayArmed.Load() {
		if time.Now().After(deadline) {
			d.mu.Unlock()
			t.Fatal("going away was not armed while the direction's lock was held")
		}
		time.Sleep(time.Millisecond)
	}
	d.mu.Unlock()
	// The copy loop's next chunk: two complete server frames.
	chunk := []byte{0x82, 3, 'o', 'n', 'e', 0x82, 3, 't', 'w', 'o'}
	if _, err := d.writeChunk(chunk, nil); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(h.client, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 0x88 {
		t.Fatalf("first frame to the client has opcode byte %#x, want a close frame (0x88)", hdr[0])
	}
	payload := make([]byte, hdr[1])
	if _, err := io.ReadFull(h.client, payload); err != nil {
		t.Fatal(err)
	}
	if code := int(payload[0])<<8 | int(payload[1]); code != wsobserve.CloseGoingAway || string(payload[2:]) != "draining" {
		t.Fatalf("close frame %d %q", code, payload[2:])
	}
	// Nothing follows: the chunk's frames were dropped after the close.
	_ = h.client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := h.client.Read(hdr); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the close frame the client read %d bytes (%v), want nothing", n, err)
	}
	h.client.Close()
	h.server.Close()
	if res := h.wait(t); !res.WentAway || res.CloseSent != 2 {
		t.Fatalf("result %+v", res)
	}
}

// TestEndRightAfterBytesIsSeen sends a last message and the end of the
// stream back to back, over and over, to a copy loop that is waiting for
// bytes after a short read: the message and the end usually reach the
// socket before the loop wakes, in one readiness event, so a loop that
// waits after a short read without the poller's watch (see rawRead.try)
// passes the message on and then waits for ever. Resets are sent the same
// way.
func TestEndRightAfterBytesIsSeen(t *testing.T) {
	for _, m := range []mode{
		{name: "nosplice", opts: Options{DisableSplice: true, ParkAfter: time.Hour}},
		{name: "observe", opts: Options{Observe: true, ParkAfter: time.Hour}},
	} {
		for _, end := range []string{"fin", "reset"} {
			t.Run(m.name+"/"+end, func(t *testing.T) {
				t.Parallel()
				for i := range 50 {
					testEndRightAfterBytes(t, m, end, i)
				}
			})
		}
	}
}

func testEndRightAfterBytes(t *testing.T, m mode, end string, i int) {
	h := start(t, m, Prefetched{})
	defer h.cancel()
	pingUntilSkipping(t, h, time.Millisecond)
	last := []byte{0x82, 1, 'b'}
	if _, err := h.client.Write(last); err != nil {
		t.Fatal(err)
	}
	if end == "fin" {
		if err := h.client.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	} else {
		_ = h.client.SetLinger(0)
		h.client.Close()
	}
	_ = h.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if end == "fin" {
		got, err := io.ReadAll(h.server)
		if err != nil || !bytes.Equal(got, last) {
			t.Fatalf("round %d: server read %q, %v after the client's last bytes and FIN", i, got, err)
		}
	} else {
		// The message, then the end: EOF, a reset, or (observing) the
		// relay's close frame.
		got := make([]byte, len(last))
		if _, err := io.ReadFull(h.server, got); err != nil && !errors.Is(err, syscall.ECONNRESET) && err != io.EOF {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, err := h.server.Read(got); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round %d: the client's reset was not passed on", i)
		}
	}
	h.server.Close()
	h.wait(t)
}

// TestEndWhileWritingToAPeerThatDoesNotRead ends a relay whose
// downstream-to-upstream copy loop is stuck writing to an upstream peer
// that reads nothing. Closing the downstream socket waits for whatever
// holds it (a read callback included), so the relay ends at once only if
// nothing waits on the upstream peer while holding the downstream socket.
func TestEndWhileWritingToAPeerThatDoesNotRead(t *testing.T) {
	for _, m := range []mode{
		{name: "nosplice", opts: Options{DisableSplice: true}},
		{name: "observe", opts: Options{Observe: true}},
		{name: "observe-parking", opts: Options{Observe: true, ParkAfter: time.Hour}},
	} {
		t.Run(m.name, func(t *testing.T) {
			h := setup(t, m)
			h.start(context.Background(), Prefetched{}, m.opts)
			go func() {
				// Megabytes of small frames: the socket buffers fill at once.
				chunk := bytes.Repeat([]byte{0x82, 1, 'x'}, 1<<16)
				for {
					if _, err := h.client.Write(chunk); err != nil {
						return
					}
				}
			}()
			time.Sleep(500 * time.Millisecond) // the server reads nothing: the relay's writes block
			start := time.Now()
			h.cancel()
			h.wait(t)
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("relay ended %v after its context (the harness's deadline), not at once", el)
			}
		})
	}
}

// pingUntilSkipping sends h's client-to-server direction one-byte binary
// frames, each after the last was passed on and pause has let the copy
// loop wait again: the first wait parks, and after watchAfter more short
// reads the loop has its socket watched and waits after a short read
// without reading again (see rawRead.try).
func pingUntilSkipping(t *testing.T, h *harness, pause time.Duration) {
	t.Helper()
	ping := []byte{0x82, 1, 'a'} // frame-shaped, so that observing relays see frames
	for range watchAfter + 2 {
		if _, err := h.client.Write(ping); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(ping))
		if _, err := io.ReadFull(h.server, got); err != nil {
			t.Fatal(err)
		}
		time.Sleep(pause)
	}
}

// TestEndComingWhileBytesWaitToBeWritten has the peer's last bytes and its
// FIN arrive while the copy loop waits to write the bytes before them (the
// direction's lock is held, as by a write to a slow peer): the poller's
// kick for the FIN ends a wait that comes after a read that returned the
// last bytes but not the FIN, and the loop must not wait after a short
// read again.
func TestEndComingWhileBytesWaitToBeWritten(t *testing.T) {
	h := start(t, mode{name: "observe", opts: Options{Observe: true, ParkAfter: time.Hour}}, Prefetched{})
	pingUntilSkipping(t, h, 5*time.Millisecond)
	m1, m2 := []byte{0x82, 1, '1'}, []byte{0x82, 1, '2'}
	d := &h.handle.r.d2u
	d.mu.Lock()
	if _, err := h.client.Write(m1); err != nil {
		d.mu.Unlock()
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the loop has read m1 and waits for d.mu
	if _, err := h.client.Write(m2); err != nil {
		d.mu.Unlock()
		t.Fatal(err)
	}
	if err := h.client.CloseWrite(); err != nil {
		d.mu.Unlock()
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the poller has kicked
	d.mu.Unlock()
	_ = h.server.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(h.server)
	if want := append(m1, m2...); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("server read %q, %v; want %q and the end", got, err, want)
	}
	h.server.Close()
	h.wait(t)
}
