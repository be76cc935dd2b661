package h2tunnel

import (
	"context"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientConn is a pooled connection to one upstream endpoint.
type clientConn struct {
	*conn
	p  *Pool
	ep *endpoint

	// Guarded by p.mu.
	reserved  int // stream slots in use
	idleSince time.Time
	dead      bool // no new streams (GOAWAY, closing, closed)
}

// capacity is the number of concurrent streams cc may carry. Called with
// p.mu held.
func (cc *clientConn) capacity() int {
	cc.mu.Lock()
	peer := cc.peerMaxStreams
	cc.mu.Unlock()
	return int(min(peer, cc.p.cfg.MaxConcurrentStreams))
}

// settled reports whether the peer's first SETTINGS arrived.
func (cc *clientConn) settled() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.peerSettings
}

// run is the connection's reader goroutine, owned by the Pool.
func (cc *clientConn) run() {
	defer cc.p.wg.Done()
	err := cc.serve()
	cc.p.markDead(cc)
	cc.teardown(err)
	cc.p.remove(cc)
}

// maintain sends keepalive PINGs and closes the connection when idle.
func (cc *clientConn) maintain() {
	defer cc.wg.Done()
	cfg := &cc.p.cfg
	tick := time.Hour
	if cfg.PingInterval > 0 {
		tick = min(tick, cfg.PingInterval/2)
	}
	if cfg.IdleConnTimeout > 0 {
		tick = min(tick, cfg.IdleConnTimeout/2)
	}
	tick = max(tick, 5*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastFrames := cc.framesRead.Load()
	lastProgress := time.Now()
	var pingSent time.Time
	for {
		var now time.Time
		select {
		case <-cc.done:
			return
		case now = <-t.C:
		}
		if cfg.PingInterval > 0 {
			if n := cc.framesRead.Load(); n != lastFrames {
				lastFrames, lastProgress, pingSent = n, now, time.Time{}
			} else if pingSent.IsZero() && now.Sub(lastProgress) >= cfg.PingInterval {
				var data [8]byte
				data[0] = 'w'
				cc.w.queue(ctrlFrame{kind: ctrlPing, ping: data}, false)
				pingSent = now
			} else if !pingSent.IsZero() && now.Sub(pingSent) >= cfg.PingInterval {
				cc.p.log.Warn("h2tunnel: keepalive timeout", "addr", cc.ep.addr)
				cc.p.markDead(cc)
				cc.fail(errKeepalive)
				return
			}
		}
		if cfg.IdleConnTimeout > 0 {
			cc.p.mu.Lock()
			idle := !cc.dead && cc.reserved == 0 && !cc.idleSince.IsZero() && now.Sub(cc.idleSince) >= cfg.IdleConnTimeout
			if idle {
				cc.dead = true
			}
			cc.p.mu.Unlock()
			if idle {
				cc.goAway(http2.ErrCodeNo, "idle")
				return
			}
		}
	}
}

// openStream creates a stream for req and queues its HEADERS. A slot was
// reserved by getConn; it is released here on failure, else when the
// stream closes.
func (cc *clientConn) openStream(ctx context.Context, req *Request, fields []hpack.HeaderField) (*stream, error) {
	if req.isExtendedConnect() {
		select {
		case <-cc.settingsCh:
		case <-cc.done:
			cc.p.release(cc)
			return nil, errConnUnusable
		case <-ctx.Done():
			cc.p.release(cc)
			return nil, ctx.Err()
		}
		cc.mu.Lock()
		ok := cc.peerExtConnect
		cc.mu.Unlock()
		cc.p.recordExtendedConnect(cc.ep, ok)
		if !ok {
			cc.p.release(cc)
			return nil, ErrExtendedConnectUnsupported
		}
	}
	cc.mu.Lock()
	if cc.closed || cc.goAwayRecv != nil || cc.goAwaySent || cc.nextID > maxWindow {
		cc.mu.Unlock()
		cc.p.markDead(cc)
		cc.p.release(cc)
		return nil, errConnUnusable
	}
	id := cc.nextID
	cc.nextID += 2
	st := newStream(cc.conn, id)
	cc.addStreamLocked(st)
	w := cc.w
	w.mu.Lock()
	st.sendWin = w.initWin
	if req.NoBody {
		st.pendEnd = true
		st.endInHeaders = true
	}
	ok := w.queueLocked(ctrlFrame{kind: ctrlHeaders, streamID: id, fields: fields, end: req.NoBody, st: st}, false)
	w.mu.Unlock()
	if !ok {
		cc.dropStreamLocked(id)
		cc.mu.Unlock()
		cc.p.markDead(cc)
		cc.p.release(cc)
		return nil, errConnUnusable
	}
	cc.mu.Unlock()
	cc.opened.Add(1)
	w.signal()
	return st, nil
}

func (cc *clientConn) onStreamClosed(*stream) { cc.p.release(cc) }

func (cc *clientConn) onSettings(bool) {
	cc.p.mu.Lock()
	cc.ep.notifyLocked()
	cc.p.mu.Unlock()
}

func (cc *clientConn) onPeerReset(*stream) error { return nil }

// onGoAway: streams above the last id fail with GoAwayError (retryable);
// the others run to completion; no new streams go to this connection.
func (cc *clientConn) onGoAway(f *http2.GoAwayFrame) {
	cc.p.markDead(cc)
	gerr := &GoAwayError{LastStreamID: f.LastStreamID, Code: f.ErrCode, Debug: string(f.DebugData())}
	cc.mu.Lock()
	if f.ErrCode != http2.ErrCodeNo && cc.closeErr == nil {
		cc.closeErr = &PeerGoAwayError{Code: f.ErrCode, Debug: gerr.Debug}
	}
	var excluded []*stream
	for id, st := range cc.streams {
		if id > f.LastStreamID {
			excluded = append(excluded, st)
		}
	}
	cc.mu.Unlock()
	for _, st := range excluded {
		cc.closeStream(st, gerr)
	}
	cc.p.mu.Lock()
	idle := cc.reserved == 0
	cc.p.mu.Unlock()
	if idle {
		cc.w.closeAfterQueued()
	}
}

func (cc *clientConn) onHeaders(hb *hdrBlock) error {
	id := hb.streamID
	cc.mu.Lock()
	st := cc.streams[id]
	idle := st == nil && cc.idleLocked(id)
	cc.mu.Unlock()
	if idle {
		return connErr{http2.ErrCodeProtocol, "HEADERS on an idle stream"}
	}
	if st == nil {
		return nil // reset or finished: ignore
	}
	if hb.tooBig || hb.invalid != "" {
		return streamErr{id, http2.ErrCodeProtocol, "malformed response header block"}
	}
	if !st.gotHead {
		resp, bad := parseResponse(hb)
		if bad != "" {
			return streamErr{id, http2.ErrCodeProtocol, bad}
		}
		if resp.Status < 200 {
			if hb.endStream || resp.Status == 101 {
				return streamErr{id, http2.ErrCodeProtocol, "invalid informational response"}
			}
			return nil // 1xx: wait for the final response
		}
		st.gotHead = true
		st.setHead(resp, nil)
	} else {
		if !hb.endStream {
			return streamErr{id, http2.ErrCodeProtocol, "trailers without END_STREAM"}
		}
		for _, f := range hb.fields {
			if f.Name[0] == ':' {
				return streamErr{id, http2.ErrCodeProtocol, "pseudo-header field in trailers"}
			}
		}
	}
	if hb.endStream {
		st.mu.Lock()
		st.recvEnd = true
		if st.rerr == nil {
			st.rerr = io.EOF
		}
		st.unlockNotifyRead()
		cc.remoteEnded(st)
	}
	return nil
}

// Stream is a client stream: Read returns the response body, Write sends
// the request body (blocking while flow control allows no more), CloseWrite
// ends the request (END_STREAM). A peer RST_STREAM surfaces as
// *StreamError; a GOAWAY that excluded the stream as *GoAwayError; a dead
// connection as an error wrapping ErrConnLost.
type Stream struct {
	Response *Response
	s        *stream
}

// ID returns the HTTP/2 stream id.
func (st *Stream) ID() uint32 { return st.s.id }

// ReadResponse waits for the response HEADERS and stores them in
// st.Response. Cancelling ctx resets the stream.
func (st *Stream) ReadResponse(ctx context.Context) (*Response, error) {
	if err := ctx.Err(); err != nil { // given up, even if the head is in
		st.s.close(http2.ErrCodeCancel)
		return nil, err
	}
	st.s.mu.Lock()
	if st.s.head == nil && !st.s.headDone {
		st.s.head = make(chan struct{})
	}
	head, done := st.s.head, st.s.headDone
	st.s.mu.Unlock()
	if !done {
		select {
		case <-head:
		case <-ctx.Done():
			st.s.close(http2.ErrCodeCancel)
			return nil, ctx.Err()
		}
	}
	st.s.mu.Lock()
	resp, err := st.s.resp, st.s.headErr
	st.s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	st.Response = resp
	return resp, nil
}

// Read reads response body bytes; io.EOF at END_STREAM.
func (st *Stream) Read(p []byte) (int, error) { return st.s.read(p) }

// Write sends request body bytes.
func (st *Stream) Write(p []byte) (int, error) { return st.s.write(p) }

// TryWrite sends p as Write does when that needs no waiting (p is small,
// flow control admits it, the connection's writer takes the frame), and
// otherwise sends nothing and returns 0 and no error, for the caller to
// use Write. It lets a caller that must not wait (a socket's read
// callback) pass bytes on.
func (st *Stream) TryWrite(p []byte) (int, error) { return st.s.tryWrite(p) }

// WaitReadable blocks until Read would return without blocking, consuming
// nothing, so a relay need not hold a buffer while the stream is idle.
func (st *Stream) WaitReadable() error { return st.s.waitReadable() }

// NotifyReadable arranges for f to be called once when Read would not
// block; it reports false, arranging nothing, when Read would not block
// already. A relay uses it to wait without a goroutine. When a DATA frame
// arrives (with bytes, END_STREAM, or neither: f may find nothing to
// read), f runs on the goroutine that reads the whole connection, right
// after the frame is buffered: it must not block, and may take the bytes
// with ReadNoWait and pass them on at once. For anything else (HEADERS
// ending the stream, a reset, Close, the connection lost) f runs on a new
// goroutine.
func (st *Stream) NotifyReadable(f func()) bool { return st.s.notifyReadable(f) }

// ReadNoWait is Read without waiting: it returns (0, nil) when no bytes
// are buffered and the stream has not ended.
func (st *Stream) ReadNoWait(p []byte) (int, error) { return st.s.readNoWait(p) }

// CloseWrite ends the request body (END_STREAM); reading continues.
func (st *Stream) CloseWrite() error { return st.s.closeWrite() }

// Close is a no-op when both directions have ended, otherwise it resets
// the stream with CANCEL.
func (st *Stream) Close() error { return st.s.close(http2.ErrCodeCancel) }

// Reset resets the stream with code.
func (st *Stream) Reset(code http2.ErrCode) error {
	st.s.c.resetStream(st.s, code, &StreamError{StreamID: st.s.id, Code: code})
	return st.s.close(code)
}

// LocalAddr returns the TCP connection's local address.
func (st *Stream) LocalAddr() net.Addr { return st.s.c.nc.LocalAddr() }

// RemoteAddr returns the TCP connection's remote address.
func (st *Stream) RemoteAddr() net.Addr { return st.s.c.nc.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.s.dl.set(readDL, t)
	st.s.dl.set(writeDL, t)
	return nil
}

// SetReadDeadline bounds Read.
func (st *Stream) SetReadDeadline(t time.Time) error { st.s.dl.set(readDL, t); return nil }

// SetWriteDeadline bounds Write.
func (st *Stream) SetWriteDeadline(t time.Time) error { st.s.dl.set(writeDL, t); return nil }
