package echo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// echoConn is one upgraded WebSocket connection.
type echoConn struct {
	s      *Server
	ws     *websocket.Conn
	remote string

	// goingAway is set when Shutdown closes the connection, so that the
	// handler's log line names the shutdown rather than the read error it
	// causes.
	goingAway atomic.Bool
}

// serveWebSocket validates the opening handshake, upgrades the connection
// and runs the echo loop until the connection ends.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if herr := checkHandshake(r); herr != nil {
		s.log.Info("refused WebSocket handshake", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.RequestURI(),
			"status", herr.status, "cause", herr.reason)
		writeHandshakeError(w, r, herr)
		return
	}

	if !s.begin() {
		s.log.Info("refused WebSocket handshake", "remote", r.RemoteAddr, "path", r.URL.RequestURI(),
			"status", http.StatusServiceUnavailable, "cause", "server is shutting down")
		w.Header().Set("Connection", "close")
		http.Error(w, "503 Service Unavailable: server is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()

	subprotocol := selectSubprotocol(r, s.cfg.Subprotocols)
	opts := &websocket.AcceptOptions{
		// The echo server is a test workload reached through the mesh;
		// like the Python server it stands in for, it accepts any Origin.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionNoContextTakeover,
	}
	if subprotocol != "" {
		opts.Subprotocols = []string{subprotocol}
	}
	if s.cfg.DisableCompression {
		opts.CompressionMode = websocket.CompressionDisabled
	}
	rec := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Accept(rec, r, opts)
	if err != nil {
		s.log.Warn("WebSocket upgrade failed", "remote", r.RemoteAddr, "path", r.URL.RequestURI(), "cause", err)
		return
	}
	// When Shutdown's deadline passes, drop the TCP connection: this ends
	// any read, write or close handshake still waiting on the peer.
	if rec.conn != nil {
		stop := context.AfterFunc(s.connCtx, func() { rec.conn.Close() })
		defer stop()
	}
	// read enforces MaxMessageSize itself, to close with a reason that
	// names the limit; the library's limit stays as a backstop above it.
	if s.cfg.MaxMessageSize < 0 {
		ws.SetReadLimit(-1)
	} else {
		ws.SetReadLimit(s.cfg.MaxMessageSize + 1)
	}
	c := &echoConn{s: s, ws: ws, remote: r.RemoteAddr}
	if !s.track(c) {
		// Shutdown began while the handshake was in progress.
		c.goingAway.Store(true)
		_ = ws.Close(websocket.StatusGoingAway, "")
		s.log.Info("WebSocket connection closed", "remote", c.remote, "code", int(websocket.StatusGoingAway),
			"cause", "server shutting down")
		return
	}
	defer s.untrack(c)

	offered := headerTokens(r.Header, "Sec-WebSocket-Protocol")
	if len(offered) > 0 && subprotocol == "" {
		s.log.Info("no offered subprotocol is supported; continuing without one", "remote", c.remote, "offered", offered)
	}
	s.log.Info("WebSocket connection opened", "remote", c.remote, "path", r.URL.RequestURI(),
		"subprotocol", ws.Subprotocol(), "extensions", w.Header().Get("Sec-WebSocket-Extensions"))

	start := time.Now()
	messages, code, reason, cause := c.echo(s.connCtx)
	if c.goingAway.Load() {
		code, reason, cause = websocket.StatusGoingAway, "", "server shutting down"
	}
	s.log.Info("WebSocket connection closed", "remote", c.remote, "code", int(code), "reason", reason,
		"cause", cause, "messages", messages, "duration", time.Since(start).Round(time.Millisecond))
}

// echo sends every message back until the connection ends, then completes
// the close handshake. It returns the number of messages echoed, the close
// code and reason that ended the connection and a short cause for the log.
func (c *echoConn) echo(ctx context.Context) (messages int, code websocket.StatusCode, reason, cause string) {
	for {
		typ, buf, err := c.read(ctx)
		if err != nil {
			putBuffer(buf)
			code, reason, cause = c.classify(err)
			// Completes the close handshake: a no-op write when a close
			// frame was already sent or echoed, then waits for the peer.
			_ = c.ws.Close(code, reason)
			return messages, code, reason, cause
		}
		data := *buf
		if typ == websocket.MessageText && !utf8.Valid(data) {
			putBuffer(buf)
			code, reason = websocket.StatusInvalidFramePayloadData, "invalid UTF-8 in text message"
			_ = c.ws.Close(code, reason)
			return messages, code, reason, "peer sent a text message that is not valid UTF-8"
		}
		err = c.ws.Write(ctx, typ, data)
		putBuffer(buf)
		if err != nil {
			code, reason, cause = c.classify(err)
			_ = c.ws.Close(code, reason)
			return messages, code, reason, "writing echo: " + cause
		}
		messages++
	}
}

// firstBufferSize is the capacity of a message buffer when it is first
// made; read grows a buffer as a message needs and the grown buffer is what
// returns to the pool.
const firstBufferSize = 32 << 10

// buffers holds the message buffers (*[]byte) of messages already echoed,
// so that a busy connection reads each message into memory it used before
// instead of allocating and zeroing a new slice per message. A connection
// takes a buffer only once a message has begun to arrive and gives it back
// as soon as the echo is written, so a connection waiting for its next
// message holds none, and buffers the server stops using are freed by the
// garbage collector like any sync.Pool content.
var buffers = sync.Pool{New: func() any {
	b := make([]byte, 0, firstBufferSize)
	return &b
}}

// maxPooledBuffer is the largest message buffer kept for reuse: one grown
// for an outsize message is left to the garbage collector.
const maxPooledBuffer = 1 << 20

// putBuffer returns buf, which may be nil, to the pool.
func putBuffer(buf *[]byte) {
	if buf == nil || cap(*buf) > maxPooledBuffer {
		return
	}
	*buf = (*buf)[:0]
	buffers.Put(buf)
}

// errTooBig reports a message over Config.MaxMessageSize.
var errTooBig = errors.New("message too big")

// read reads one whole message, whatever the number of frames it came in,
// into a buffer taken from the pool; the message is the buffer's contents,
// and the caller must hand the buffer back with putBuffer. The buffer is
// nil when no message began. read stops reading as soon as the message
// exceeds the size limit and returns errTooBig.
func (c *echoConn) read(ctx context.Context) (websocket.MessageType, *[]byte, error) {
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	buf := buffers.Get().(*[]byte)
	*buf, err = readMessage(r, (*buf)[:0], c.s.cfg.MaxMessageSize)
	return typ, buf, err
}

// readMessage appends everything r yields until io.EOF to b, growing b when
// it is full, and returns the result. When limit is not negative it reads at
// most limit+1 bytes and returns errTooBig once the message is longer than
// limit.
func readMessage(r io.Reader, b []byte, limit int64) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		room := b[len(b):cap(b)]
		if limit >= 0 && int64(cap(b)) > limit+1 {
			room = room[:limit+1-int64(len(b))]
		}
		n, err := r.Read(room)
		b = b[:len(b)+n]
		if limit >= 0 && int64(len(b)) > limit {
			return b, errTooBig
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// classify maps the error that ended the echo loop to the close code and
// reason the server sends (or echoed) and a cause for the log.
func (c *echoConn) classify(err error) (websocket.StatusCode, string, string) {
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return ce.Code, ce.Reason, "peer closed the connection"
	case errors.Is(err, errTooBig), errors.Is(err, websocket.ErrMessageTooBig):
		return websocket.StatusMessageTooBig, fmt.Sprintf("message larger than %d bytes", c.s.cfg.MaxMessageSize),
			fmt.Sprintf("peer sent a message larger than the %d-byte limit", c.s.cfg.MaxMessageSize)
	case errors.Is(err, context.Canceled):
		return websocket.StatusGoingAway, "", "server shutting down"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return websocket.StatusAbnormalClosure, "", "connection lost without a close frame"
	default:
		return websocket.StatusProtocolError, "", err.Error()
	}
}

// goAway closes the connection with 1001 (Going Away) for Shutdown, which
// counted it in the server's wait group.
func (c *echoConn) goAway() {
	defer c.s.wg.Done()
	c.goingAway.Store(true)
	_ = c.ws.Close(websocket.StatusGoingAway, "")
}

// hijackRecorder passes the upgrade through to the underlying
// ResponseWriter and remembers the hijacked connection, so that Shutdown can
// drop it when its deadline passes whatever server the handler runs in.
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

// Hijack implements http.Hijacker.
func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	rw := h.ResponseWriter
	for {
		switch t := rw.(type) {
		case http.Hijacker:
			c, brw, err := t.Hijack()
			h.conn = c
			return c, brw, err
		case interface{ Unwrap() http.ResponseWriter }:
			rw = t.Unwrap()
		default:
			return nil, nil, errors.New("the http.ResponseWriter does not support hijacking")
		}
	}
}
