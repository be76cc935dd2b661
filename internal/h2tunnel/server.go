package h2tunnel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ServerConfig configures the accepting side of the tunnel. Zero values
// take the defaults of limits.go.
type ServerConfig struct {
	// AllowConnect advertises SETTINGS_ENABLE_CONNECT_PROTOCOL=1 and
	// accepts RFC 8441 extended CONNECT. When false a request carrying
	// :protocol is malformed (RFC 8441 §3) and reset with PROTOCOL_ERROR.
	AllowConnect bool
	// MaxConcurrentStreams is advertised and enforced with REFUSED_STREAM.
	MaxConcurrentStreams uint32
	// InitialStreamWindow, InitialConnWindow: receive windows.
	InitialStreamWindow, InitialConnWindow uint32
	// MaxFrameSize is the largest frame accepted.
	MaxFrameSize uint32
	// MaxHeaderListSize bounds a request's decoded header list; a larger
	// one is answered with 431 and the stream is ended.
	MaxHeaderListSize uint32
	// MaxResetsPerSecond bounds the client's RST_STREAM rate (rapid reset,
	// CVE-2023-44487); above it the connection gets GOAWAY
	// ENHANCE_YOUR_CALM. Negative disables the check.
	MaxResetsPerSecond int
	// DrainTimeout bounds how long a draining connection waits for open
	// streams before closing.
	DrainTimeout time.Duration
	// Handler serves one request stream; it runs in its own goroutine and
	// the stream is finished when it returns (see ServerStream).
	Handler func(st *ServerStream)
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
}

// ServerStats are counters of a Server.
type ServerStats struct {
	Conns           int    // connections being served
	ActiveStreams   int    // open streams
	StreamsAccepted uint64 // streams handed to the Handler
	StreamsRefused  uint64 // REFUSED_STREAM sent
	StreamsRejected uint64 // malformed requests reset with PROTOCOL_ERROR, or 431
	PeerResets      uint64 // RST_STREAM received on open streams
	CalmedConns     uint64 // connections closed with ENHANCE_YOUR_CALM
}

// Server accepts HTTP/2 connections from peer sidecars.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu     sync.Mutex
	conns  map[*serverConn]struct{}
	closed bool

	accepted, refused, rejected, peerResets, calmed atomic.Uint64
}

// NewServer returns a Server for cfg.
func NewServer(cfg ServerConfig) *Server {
	cfg.MaxConcurrentStreams = orDefault(cfg.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	cfg.InitialStreamWindow = min(orDefault(cfg.InitialStreamWindow, DefaultInitialStreamWindow), maxWindow)
	cfg.InitialConnWindow = min(orDefault(cfg.InitialConnWindow, DefaultInitialConnWindow), maxWindow)
	cfg.MaxFrameSize = min(max(orDefault(cfg.MaxFrameSize, DefaultMaxFrameSize), 16384), 1<<24-1)
	cfg.MaxHeaderListSize = orDefault(cfg.MaxHeaderListSize, DefaultMaxHeaderListSize)
	cfg.MaxResetsPerSecond = orDefault(cfg.MaxResetsPerSecond, DefaultMaxResetsPerSecond)
	cfg.DrainTimeout = orDefault(cfg.DrainTimeout, DefaultDrainTimeout)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, conns: make(map[*serverConn]struct{})}
}

// ServeConn serves one connection whose first bytes are the client
// preface. It returns when the connection has ended and every Handler of
// it has returned; nil for an orderly end. Cancelling ctx drains the
// connection: GOAWAY(NO_ERROR, last stream id), open streams may finish
// for up to DrainTimeout, then the connection closes.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	return s.ServeConnBuffered(ctx, c, nil)
}

// ServeConnBuffered is ServeConn for a caller that already wrapped c in a
// bufio.Reader (for instance to peek the preface when detecting the
// protocol); br must read from c and may hold the preface.
func (s *Server) ServeConnBuffered(ctx context.Context, c net.Conn, br *bufio.Reader) error {
	cfg := &s.cfg
	sc := &serverConn{s: s}
	sc.conn = newConn(c, br, connSettings{
		maxStreams:    cfg.MaxConcurrentStreams,
		streamWin:     cfg.InitialStreamWindow,
		connWin:       cfg.InitialConnWindow,
		maxFrame:      cfg.MaxFrameSize,
		maxHeaderList: cfg.MaxHeaderListSize,
		enableConnect: cfg.AllowConnect,
	}, s.log)
	sc.role = sc
	sc.resets.limit = cfg.MaxResetsPerSecond
	sc.ctx, sc.cancel = context.WithCancel(context.Background())
	defer sc.cancel()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return ErrServerClosed
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
	}()

	sc.start()
	err := sc.readPreface()
	if err == nil {
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			select {
			case <-ctx.Done():
				sc.drain()
			case <-sc.done:
			}
		}()
		err = sc.serve()
	}
	sc.teardown(err)
	sc.handlers.Wait()
	if sc.calm.Load() {
		s.calmed.Add(1)
	}
	return cleanEnd(err)
}

// cleanEnd maps the ways a connection ends normally to nil.
func cleanEnd(err error) error {
	var ce connErr
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, errWriterClosed):
		return nil
	case errors.As(err, &ce) && ce.code == http2.ErrCodeNo:
		return nil
	}
	return err
}

// Drain sends GOAWAY on every connection and lets open streams finish (up
// to DrainTimeout); connections close when their streams are done.
func (s *Server) Drain() {
	for _, sc := range s.snapshot() {
		sc.drain()
	}
}

// Close refuses new connections and closes every connection at once; open
// streams fail. ServeConn calls return after their Handlers did.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	for _, sc := range s.snapshot() {
		sc.goAway(http2.ErrCodeNo, "server closing")
		sc.nc.Close()
	}
	return nil
}

func (s *Server) snapshot() []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		out = append(out, sc)
	}
	return out
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	st := ServerStats{
		StreamsAccepted: s.accepted.Load(),
		StreamsRefused:  s.refused.Load(),
		StreamsRejected: s.rejected.Load(),
		PeerResets:      s.peerResets.Load(),
		CalmedConns:     s.calmed.Load(),
	}
	for _, sc := range s.snapshot() {
		st.Conns++
		sc.mu.Lock()
		st.ActiveStreams += len(sc.streams)
		sc.mu.Unlock()
	}
	return st
}

// serverConn is the server end of a connection.
type serverConn struct {
	*conn
	s        *Server
	ctx      context.Context
	cancel   context.CancelFunc
	handlers sync.WaitGroup
	live     atomic.Int32 // running handlers
	resets   rateLimiter
	draining bool // guarded by conn.mu
}

func (sc *serverConn) readPreface() error {
	sc.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(sc.br, buf[:]); err != nil {
		return fmt.Errorf("h2tunnel: reading client preface: %w", err)
	}
	sc.nc.SetReadDeadline(time.Time{})
	if !bytes.Equal(buf[:], []byte(http2.ClientPreface)) {
		sc.goAway(http2.ErrCodeProtocol, "bad client preface")
		return connErr{http2.ErrCodeProtocol, "bad client preface"}
	}
	return nil
}

// drain sends GOAWAY(NO_ERROR) and closes the connection once its streams
// are done or DrainTimeout passed.
func (sc *serverConn) drain() {
	sc.mu.Lock()
	if sc.draining || sc.closed {
		sc.mu.Unlock()
		return
	}
	sc.draining = true
	sc.goAwaySent = true
	last := sc.maxPeerID
	sc.goAwayLast = last
	idle := len(sc.streams) == 0
	sc.mu.Unlock()
	sc.w.queue(ctrlFrame{kind: ctrlGoAway, val: last, code: http2.ErrCodeNo}, false)
	if idle {
		sc.w.closeAfterQueued()
		return
	}
	sc.wg.Add(1)
	go func() {
		defer sc.wg.Done()
		t := time.NewTimer(sc.s.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			sc.s.log.Info("h2tunnel: drain timeout, closing connection", "remote", sc.nc.RemoteAddr().String())
			sc.w.closeAfterQueued()
		case <-sc.done:
		}
	}()
}

func (sc *serverConn) onSettings(bool) {}

func (sc *serverConn) onGoAway(*http2.GoAwayFrame) { sc.drain() }

func (sc *serverConn) onPeerReset(*stream) error {
	sc.s.peerResets.Add(1)
	if !sc.resets.allow(time.Now()) {
		return connErr{http2.ErrCodeEnhanceYourCalm, "too many stream resets"}
	}
	return nil
}

func (sc *serverConn) onStreamClosed(*stream) {
	sc.mu.Lock()
	done := sc.draining && len(sc.streams) == 0
	sc.mu.Unlock()
	if done {
		sc.w.closeAfterQueued()
	}
}

func (sc *serverConn) onHeaders(hb *hdrBlock) error {
	id := hb.streamID
	if id%2 == 0 {
		return connErr{http2.ErrCodeProtocol, "client opened an even stream id"}
	}
	sc.mu.Lock()
	st := sc.streams[id]
	newID := st == nil && id > sc.maxPeerID
	if newID {
		sc.maxPeerID = id
	}
	draining := sc.draining
	n := len(sc.streams)
	sc.mu.Unlock()

	if st != nil {
		return sc.trailers(st, hb)
	}
	if !newID {
		return connErr{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
	}
	if draining {
		return nil // after GOAWAY new streams are ignored (RFC 9113 §6.8)
	}
	if hb.tooBig {
		sc.s.rejected.Add(1)
		return sc.headerTooLarge(id, hb.endStream)
	}
	if hb.invalid != "" {
		sc.s.rejected.Add(1)
		return streamErr{id, http2.ErrCodeProtocol, hb.invalid}
	}
	req, declLen, bad := parseRequest(hb, sc.s.cfg.AllowConnect)
	if bad != "" {
		sc.s.rejected.Add(1)
		return streamErr{id, http2.ErrCodeProtocol, bad}
	}
	if n >= int(sc.s.cfg.MaxConcurrentStreams) || int(sc.live.Load()) >= 2*int(sc.s.cfg.MaxConcurrentStreams) {
		sc.s.refused.Add(1)
		return streamErr{id, http2.ErrCodeRefusedStream, "concurrency limit"}
	}

	st = newStream(sc.conn, id)
	st.declLen = declLen
	ss := &ServerStream{Request: req, s: st, sc: sc}
	sc.mu.Lock()
	sc.addStreamLocked(st)
	sc.w.mu.Lock()
	st.sendWin = sc.w.initWin
	sc.w.mu.Unlock()
	sc.mu.Unlock()
	sc.opened.Add(1)
	sc.s.accepted.Add(1)
	if hb.endStream {
		st.mu.Lock()
		st.recvEnd = true
		st.rerr = io.EOF
		st.mu.Unlock()
		sc.remoteEnded(st)
	}
	sc.live.Add(1)
	sc.handlers.Add(1)
	go sc.runHandler(ss)
	return nil
}

// headerTooLarge answers an oversized header list with 431 and ends the
// stream (RST_STREAM NO_ERROR if the client has more to send).
func (sc *serverConn) headerTooLarge(id uint32, ended bool) error {
	w := sc.w
	w.mu.Lock()
	ok := w.queueLocked(ctrlFrame{kind: ctrlHeaders, streamID: id, end: true,
		fields: []hpack.HeaderField{{Name: ":status", Value: "431"}}}, true)
	if ok && !ended {
		ok = w.queueLocked(ctrlFrame{kind: ctrlRST, streamID: id, code: http2.ErrCodeNo}, true)
	}
	w.mu.Unlock()
	w.signal()
	sc.rememberReset(id)
	if !ok {
		return sc.flood("431")
	}
	return nil
}

// trailers handles a second HEADERS on an open stream.
func (sc *serverConn) trailers(st *stream, hb *hdrBlock) error {
	st.mu.Lock()
	ended := st.recvEnd
	st.mu.Unlock()
	if ended {
		return streamErr{st.id, http2.ErrCodeStreamClosed, "HEADERS after END_STREAM"}
	}
	if !hb.endStream {
		return streamErr{st.id, http2.ErrCodeProtocol, "trailers without END_STREAM"}
	}
	if hb.invalid != "" || hb.tooBig {
		return streamErr{st.id, http2.ErrCodeProtocol, "malformed trailers"}
	}
	for _, f := range hb.fields {
		if f.Name[0] == ':' {
			return streamErr{st.id, http2.ErrCodeProtocol, "pseudo-header field in trailers"}
		}
	}
	st.mu.Lock()
	if st.declLen >= 0 && st.gotLen != st.declLen {
		st.mu.Unlock()
		return streamErr{st.id, http2.ErrCodeProtocol, "DATA length differs from content-length"}
	}
	st.recvEnd = true
	if st.rerr == nil {
		st.rerr = io.EOF
	}
	st.unlockNotifyRead()
	sc.remoteEnded(st)
	return nil
}

func (sc *serverConn) runHandler(ss *ServerStream) {
	defer func() {
		if r := recover(); r != nil {
			sc.s.log.Error("h2tunnel: handler panic", "panic", r, "stack", string(debug.Stack()))
			ss.s.close(http2.ErrCodeInternal)
			if !ss.detached { // else release still comes, and does the accounting
				sc.live.Add(-1)
				sc.handlers.Done()
			}
			return
		}
		if !ss.detached {
			ss.release()
		}
	}()
	if h := sc.s.cfg.Handler; h != nil {
		h(ss)
	} else {
		ss.WriteResponse(404, nil, true)
	}
}

// Detach lets the Handler return while the stream stays in use, for work
// that goes on without a goroutine of its own (a relay). What the
// Handler's return would do (end the stream as ServerStream describes, and
// count the handler as done, for ServeConn and the concurrency limit)
// happens when release is called instead. Call Detach from the Handler
// only, and release exactly once.
func (ss *ServerStream) Detach() (release func()) {
	ss.detached = true
	return ss.release
}

func (ss *ServerStream) release() {
	ss.finish()
	ss.sc.live.Add(-1)
	ss.sc.handlers.Done()
}

// ServerStream is one request stream on the server side. Read returns the
// request body; WriteResponse sends the response head, Write the body and
// CloseWrite ends it. When the Handler returns, a stream without response
// is reset with INTERNAL_ERROR, an unfinished response is ended with
// END_STREAM, and an unread request body is cut short with RST_STREAM
// NO_ERROR (RFC 9113 §8.1).
type ServerStream struct {
	Request  *Request
	s        *stream
	sc       *serverConn
	detached bool // set by Detach, read when the Handler returns
}

// ID returns the HTTP/2 stream id.
func (ss *ServerStream) ID() uint32 { return ss.s.id }

// Context is cancelled when the stream ends (reset, connection lost, or
// both directions finished).
func (ss *ServerStream) Context() context.Context { return ss.s.context(ss.sc.ctx) }

// Protocol returns "HTTP/2".
func (ss *ServerStream) Protocol() string { return "HTTP/2" }

// Read reads the request body (DATA). It returns io.EOF at END_STREAM,
// *StreamError after a reset, an ErrConnLost error if the connection died.
func (ss *ServerStream) Read(p []byte) (int, error) { return ss.s.read(p) }

// WaitReadable blocks until Read would return without blocking, consuming
// nothing, so a relay need not hold a buffer while the stream is idle.
func (ss *ServerStream) WaitReadable() error { return ss.s.waitReadable() }

// NotifyReadable arranges for f to be called once when Read would not
// block; it reports false, arranging nothing, when Read would not block
// already. A relay uses it to wait without a goroutine. When a DATA frame
// arrives (with bytes, END_STREAM, or neither: f may find nothing to
// read), f runs on the goroutine that reads the whole connection, right
// after the frame is buffered: it must not block, and may take the bytes
// with ReadNoWait and pass them on at once. For anything else (HEADERS
// ending the stream, a reset, Close, the connection lost) f runs on a new
// goroutine.
func (ss *ServerStream) NotifyReadable(f func()) bool { return ss.s.notifyReadable(f) }

// ReadNoWait is Read without waiting: it returns (0, nil) when no bytes
// are buffered and the stream has not ended.
func (ss *ServerStream) ReadNoWait(p []byte) (int, error) { return ss.s.readNoWait(p) }

// WriteResponse queues the response HEADERS; endStream ends the stream
// (no body).
func (ss *ServerStream) WriteResponse(status int, header []hpack.HeaderField, endStream bool) error {
	fields, err := responseFields(status, header)
	if err != nil {
		return err
	}
	st := ss.s
	w := st.c.w
	w.mu.Lock()
	if st.werr != nil {
		err := st.werr
		w.mu.Unlock()
		return err
	}
	if st.respWritten {
		w.mu.Unlock()
		return ErrResponseWritten
	}
	st.respWritten = true
	if endStream {
		st.pendEnd = true
		st.endInHeaders = true
	}
	if !w.queueLocked(ctrlFrame{kind: ctrlHeaders, streamID: st.id, fields: fields, end: endStream, st: st}, false) {
		w.mu.Unlock()
		return connLost(errWriterClosed)
	}
	w.mu.Unlock()
	w.signal()
	return nil
}

// Write sends response body bytes, blocking while flow control allows no
// more. It fails before WriteResponse.
func (ss *ServerStream) Write(p []byte) (int, error) {
	if !ss.responded() {
		return 0, ErrNoResponse
	}
	return ss.s.write(p)
}

// responded reports whether WriteResponse has been called.
func (ss *ServerStream) responded() bool {
	w := ss.s.c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return ss.s.respWritten
}

// TryWrite is Write when that needs no waiting, and otherwise sends
// nothing and returns 0 and no error (see Stream.TryWrite).
func (ss *ServerStream) TryWrite(p []byte) (int, error) {
	if !ss.responded() {
		return 0, ErrNoResponse
	}
	return ss.s.tryWrite(p)
}

// CloseWrite ends the response (END_STREAM).
func (ss *ServerStream) CloseWrite() error {
	w := ss.s.c.w
	w.mu.Lock()
	ok := ss.s.respWritten
	w.mu.Unlock()
	if !ok {
		return ErrNoResponse
	}
	return ss.s.closeWrite()
}

// Close ends the stream: a no-op when both directions are done, otherwise
// RST_STREAM (NO_ERROR when the response is complete and only the request
// body is unfinished, CANCEL otherwise).
func (ss *ServerStream) Close() error {
	w := ss.s.c.w
	w.mu.Lock()
	code := http2.ErrCodeCancel
	if ss.s.pendEnd {
		code = http2.ErrCodeNo
	}
	w.mu.Unlock()
	return ss.s.close(code)
}

// Reset sends RST_STREAM with code.
func (ss *ServerStream) Reset(code http2.ErrCode) error {
	ss.s.c.resetStream(ss.s, code, &StreamError{StreamID: ss.s.id, Code: code})
	ss.s.close(code)
	return nil
}

// finish runs when the Handler returns.
func (ss *ServerStream) finish() {
	st := ss.s
	w := st.c.w
	w.mu.Lock()
	responded := st.respWritten
	w.mu.Unlock()
	if !responded {
		st.c.resetStream(st, http2.ErrCodeInternal, &StreamError{StreamID: st.id, Code: http2.ErrCodeInternal})
		st.close(http2.ErrCodeInternal)
		return
	}
	st.closeWrite()
	ss.Close()
}

// LocalAddr returns the connection's local address.
func (ss *ServerStream) LocalAddr() net.Addr { return ss.s.c.nc.LocalAddr() }

// RemoteAddr returns the connection's remote address.
func (ss *ServerStream) RemoteAddr() net.Addr { return ss.s.c.nc.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (ss *ServerStream) SetDeadline(t time.Time) error {
	ss.s.dl.set(readDL, t)
	ss.s.dl.set(writeDL, t)
	return nil
}

// SetReadDeadline bounds Read.
func (ss *ServerStream) SetReadDeadline(t time.Time) error { ss.s.dl.set(readDL, t); return nil }

// SetWriteDeadline bounds Write.
func (ss *ServerStream) SetWriteDeadline(t time.Time) error { ss.s.dl.set(writeDL, t); return nil }
