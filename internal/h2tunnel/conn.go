package h2tunnel

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wsmesh/wsmesh/internal/sockio"
)

// role is what differs between the client and the server end of a
// connection.
type role interface {
	// onHeaders handles a complete, decoded header block.
	onHeaders(hb *hdrBlock) error
	// onStreamClosed is called once per stream when it leaves the
	// connection (both ends done, reset, or connection gone).
	onStreamClosed(st *stream)
	// onGoAway handles the peer's GOAWAY.
	onGoAway(f *http2.GoAwayFrame)
	// onPeerReset is called for a RST_STREAM on an open stream; an error
	// ends the connection (rapid-reset defence).
	onPeerReset(st *stream) error
	// onSettings is called after the peer's SETTINGS were applied.
	onSettings(first bool)
}

// connSettings are the values we advertise.
type connSettings struct {
	maxStreams    uint32
	streamWin     uint32
	connWin       uint32
	maxFrame      uint32
	maxHeaderList uint32
	enableConnect bool
	client        bool
}

// conn is one HTTP/2 connection, client or server end.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	fr     *http2.Framer // read side only
	w      *writer
	role   role
	client bool
	log    *slog.Logger

	ourStreamWin   int64
	ourConnWin     int64
	streamUpdateAt int64
	connUpdateAt   int64
	ourHeaderList  uint32
	settings       []http2.Setting

	// Read-loop state.
	dec         *hpack.Decoder
	hb          hdrBlock
	sawSettings bool
	scratch     []byte
	rchunks     []*[]byte
	rlens       []int

	mu              sync.Mutex
	streams         map[uint32]*stream
	nstreams        atomic.Int32 // len(streams), read without mu by the writer
	closed          bool
	closeErr        error
	goAwaySent      bool
	goAwayLast      uint32 // last stream id in the GOAWAY we sent
	goAwayRecv      *GoAwayError
	maxPeerID       uint32 // server: highest client stream id seen
	nextID          uint32 // client: next stream id to open
	peerMaxStreams  uint32
	peerExtConnect  bool
	peerSettings    bool
	settingsCh      chan struct{} // closed at the peer's first SETTINGS
	unackedSettings int
	resetIDs        [recentResets]uint32
	resetPos        int

	flowMu      sync.Mutex
	recvAvail   int64 // connection window the peer may still use
	recvUnacked int64 // consumed, not yet returned

	framesRead atomic.Uint64
	calm       atomic.Bool // closed with ENHANCE_YOUR_CALM
	opened     atomic.Uint64
	done       chan struct{}
	wg         sync.WaitGroup // helper goroutines (keepalive, drain watcher)
}

func newConn(nc net.Conn, br *bufio.Reader, cs connSettings, log *slog.Logger) *conn {
	br = connReader(nc, br)
	c := &conn{
		nc:             nc,
		br:             br,
		client:         cs.client,
		log:            log,
		ourStreamWin:   int64(cs.streamWin),
		ourConnWin:     int64(cs.connWin),
		ourHeaderList:  cs.maxHeaderList,
		streams:        make(map[uint32]*stream),
		peerMaxStreams: initialPeerMaxStreams,
		settingsCh:     make(chan struct{}),
		recvAvail:      65535,
		done:           make(chan struct{}),
		nextID:         1,
	}
	c.streamUpdateAt = max(c.ourStreamWin/2, min(minWindowUpdate, c.ourStreamWin))
	c.connUpdateAt = max(c.ourConnWin/2, min(minWindowUpdate, c.ourConnWin))
	c.fr = http2.NewFramer(nil, br)
	c.fr.SetMaxReadFrameSize(cs.maxFrame)
	c.dec = hpack.NewDecoder(4096, c.onField)
	c.dec.SetMaxStringLength(maxHeaderBlock(cs.maxHeaderList) * 2)
	c.w = newWriter(c, nc, 64<<10, cs.client)

	c.settings = []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: cs.streamWin},
		{ID: http2.SettingMaxFrameSize, Val: cs.maxFrame},
		{ID: http2.SettingMaxHeaderListSize, Val: cs.maxHeaderList},
	}
	if cs.client {
		c.settings = append(c.settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		c.settings = append(c.settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: cs.maxStreams})
		if cs.enableConnect {
			c.settings = append(c.settings, http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1})
		}
	}
	return c
}

// start queues our SETTINGS and connection WINDOW_UPDATE and starts the
// writer goroutine. The caller owns the reader (serve).
func (c *conn) start() {
	c.unackedSettings = 1
	c.w.queue(ctrlFrame{kind: ctrlSettings, settings: c.settings}, false)
	if inc := c.ourConnWin - 65535; inc > 0 {
		c.flowMu.Lock()
		c.recvAvail += inc
		c.flowMu.Unlock()
		c.w.queue(ctrlFrame{kind: ctrlWindowUpdate, val: uint32(inc)}, false)
	}
	go c.w.run()
}

// connReader returns the reader of the read loop: a 64 KiB bufio.Reader
// on nc, read with sockio's raw system calls when nc is a TCP socket. br,
// when not nil, reads from nc and may hold bytes already; they are read
// first. A br on anything but a TCP socket is used as it is.
func connReader(nc net.Conn, br *bufio.Reader) *bufio.Reader {
	rc := sockio.Wrap(nc)
	if br == nil {
		return bufio.NewReaderSize(rc, 64<<10)
	}
	if rc == nc {
		return br
	}
	held, _ := br.Peek(br.Buffered())
	return bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(held)), rc), 64<<10)
}

// serve is the read loop. It returns the cause of the connection's end.
func (c *conn) serve() error {
	for {
		fh, err := c.fr.ReadFrameHeader()
		if err != nil {
			if errors.Is(err, http2.ErrFrameTooLarge) {
				err = connErr{http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE"}
			}
			if err = c.handleErr(err); err != nil {
				return err
			}
			continue
		}
		c.framesRead.Add(1)
		if !c.sawSettings && (fh.Type != http2.FrameSettings || fh.Flags.Has(http2.FlagSettingsAck)) {
			return c.handleErr(connErr{http2.ErrCodeProtocol, "first frame is not SETTINGS"})
		}
		if fh.Type == http2.FrameData {
			err = c.readData(fh)
		} else {
			var f http2.Frame
			f, err = c.fr.ReadFrameForHeader(fh)
			if err == nil {
				err = c.processFrame(f)
			}
		}
		if err != nil {
			if err = c.handleErr(err); err != nil {
				return err
			}
		}
	}
}

// handleErr turns stream errors into RST_STREAM (returning nil) and
// connection errors into GOAWAY (returning the error, which ends serve).
func (c *conn) handleErr(err error) error {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return c.streamError(se.StreamID, se.Code)
	case errors.As(err, &ce):
		err = connErr{http2.ErrCode(ce), detail(c.fr.ErrorDetail())}
	}
	if e, ok := err.(streamErr); ok {
		return c.streamError(e.id, e.code)
	}
	if e, ok := err.(connErr); ok {
		c.goAway(e.code, e.reason)
		return e
	}
	return err
}

func detail(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// streamError resets stream id because of something the peer did.
func (c *conn) streamError(id uint32, code http2.ErrCode) error {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil && c.resetStream(st, code, &StreamError{StreamID: id, Code: code}) {
		return nil
	}
	// No such stream, or it closed meanwhile (its last frame was just
	// written): the peer still hears of its error.
	c.rememberReset(id)
	if !c.w.queue(ctrlFrame{kind: ctrlRST, streamID: id, code: code}, true) {
		return c.flood("RST_STREAM")
	}
	return nil
}

// flood answers a peer that makes us queue too many control frames.
func (c *conn) flood(what string) error {
	e := connErr{http2.ErrCodeEnhanceYourCalm, "too many queued control frames (" + what + ")"}
	c.goAway(e.code, e.reason)
	return e
}

// goAway sends GOAWAY with code and stops the writer after it. For
// NO_ERROR the connection keeps running until the caller closes it.
func (c *conn) goAway(code http2.ErrCode, debug string) {
	if code == http2.ErrCodeEnhanceYourCalm {
		c.calm.Store(true)
	}
	c.mu.Lock()
	last := c.maxPeerID
	if c.goAwaySent && c.goAwayLast < last {
		last = c.goAwayLast // a later GOAWAY never raises the id
	}
	c.goAwayLast = last
	c.goAwaySent = true
	c.mu.Unlock()
	c.w.finalGoAway(last, code, debug)
}

// rememberReset notes a stream we reset so that frames already in flight
// for it are ignored.
func (c *conn) rememberReset(id uint32) {
	c.mu.Lock()
	c.resetIDs[c.resetPos] = id
	c.resetPos = (c.resetPos + 1) % recentResets
	c.mu.Unlock()
}

func (c *conn) recentlyResetLocked(id uint32) bool {
	for _, r := range c.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}

// idleLocked reports whether id names a stream that was never opened.
func (c *conn) idleLocked(id uint32) bool {
	if id%2 == 0 {
		return true // we never push, and clients never open even ids
	}
	if c.client {
		return id >= c.nextID
	}
	return id > c.maxPeerID
}

func (c *conn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.HeadersFrame:
		return c.onHeadersFrame(f)
	case *http2.ContinuationFrame:
		return c.onContinuation(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if !c.w.queue(ctrlFrame{kind: ctrlPingAck, ping: f.Data}, true) {
			return c.flood("PING")
		}
		return nil
	case *http2.RSTStreamFrame:
		return c.onRST(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return streamErr{f.StreamID, http2.ErrCodeProtocol, "stream depends on itself"}
		}
		return nil
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goAwayRecv = &GoAwayError{LastStreamID: f.LastStreamID, Code: f.ErrCode, Debug: string(f.DebugData())}
		c.mu.Unlock()
		c.role.onGoAway(f)
		return nil
	case *http2.PushPromiseFrame:
		return connErr{http2.ErrCodeProtocol, "PUSH_PROMISE not allowed"}
	}
	return nil // unknown frame types are ignored
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		c.mu.Lock()
		c.unackedSettings--
		bad := c.unackedSettings < 0
		c.mu.Unlock()
		if bad {
			return connErr{http2.ErrCodeProtocol, "SETTINGS ACK without SETTINGS"}
		}
		return nil
	}
	if f.NumSettings() > maxSettingsPerFrame {
		return connErr{http2.ErrCodeEnhanceYourCalm, "too many settings"}
	}
	first := !c.sawSettings
	c.sawSettings = true
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.w.queue(ctrlFrame{kind: ctrlTableSize, val: s.Val}, false)
		case http2.SettingEnablePush:
			if c.client && s.Val != 0 {
				return connErr{http2.ErrCodeProtocol, "server sent SETTINGS_ENABLE_PUSH=1"}
			}
		case http2.SettingMaxConcurrentStreams:
			c.mu.Lock()
			c.peerMaxStreams = s.Val
			c.mu.Unlock()
		case http2.SettingInitialWindowSize:
			return c.setPeerInitialWindow(s.Val)
		case http2.SettingMaxFrameSize:
			c.w.mu.Lock()
			c.w.maxFrame = int(s.Val)
			c.w.mu.Unlock()
		case http2.SettingEnableConnectProtocol:
			c.mu.Lock()
			c.peerExtConnect = s.Val == 1
			c.mu.Unlock()
		}
		return nil
	})
	if err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return connErr{http2.ErrCode(ce), "invalid setting"}
		}
		return err
	}
	if !c.w.queue(ctrlFrame{kind: ctrlSettingsAck}, true) {
		return c.flood("SETTINGS")
	}
	if first {
		c.mu.Lock()
		c.peerSettings = true
		close(c.settingsCh)
		c.mu.Unlock()
	}
	c.role.onSettings(first)
	return nil
}

// setPeerInitialWindow applies a new SETTINGS_INITIAL_WINDOW_SIZE to every
// stream's send window (RFC 9113 §6.9.2).
func (c *conn) setPeerInitialWindow(v uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	delta := int64(v) - w.initWin
	w.initWin = int64(v)
	for _, st := range c.streams {
		st.sendWin += delta
		if st.sendWin > maxWindow {
			return connErr{http2.ErrCodeFlowControl, "window overflow from SETTINGS_INITIAL_WINDOW_SIZE"}
		}
		if st.sendWin > 0 && len(st.pend) > 0 {
			w.pushReadyLocked(st)
		}
	}
	w.signal()
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	w := c.w
	if f.StreamID == 0 {
		w.mu.Lock()
		w.connWin += int64(f.Increment)
		over := w.connWin > maxWindow
		w.mu.Unlock()
		if over {
			return connErr{http2.ErrCodeFlowControl, "connection window overflow"}
		}
		w.signal()
		return nil
	}
	c.mu.Lock()
	st := c.streams[f.StreamID]
	idle := st == nil && c.idleLocked(f.StreamID)
	c.mu.Unlock()
	if idle {
		return connErr{http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream"}
	}
	if st == nil {
		return nil
	}
	w.mu.Lock()
	st.sendWin += int64(f.Increment)
	if st.sendWin > maxWindow {
		w.mu.Unlock()
		return streamErr{f.StreamID, http2.ErrCodeFlowControl, "stream window overflow"}
	}
	if st.sendWin > 0 && len(st.pend) > 0 {
		w.pushReadyLocked(st)
	}
	w.mu.Unlock()
	w.signal()
	return nil
}

func (c *conn) onRST(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	idle := st == nil && c.idleLocked(f.StreamID)
	c.mu.Unlock()
	if idle {
		return connErr{http2.ErrCodeProtocol, "RST_STREAM on idle stream"}
	}
	if st == nil {
		return nil
	}
	err := c.role.onPeerReset(st)
	c.closeStream(st, &StreamError{StreamID: f.StreamID, Code: f.ErrCode, Remote: true})
	return err
}

// resetStream sends RST_STREAM with code and fails st with err.
func (c *conn) resetStream(st *stream, code http2.ErrCode, err error) bool {
	if !c.markClosed(st) {
		return false
	}
	c.rememberReset(st.id)
	// Queue the RST before the close callbacks, which may start closing
	// the connection.
	c.w.queue(ctrlFrame{kind: ctrlRST, streamID: st.id, code: code}, false)
	c.failClosed(st, err)
	return true
}

// closeStream removes a stream ended by a reset or by the connection's end
// and fails both of its directions. It reports whether it was still open.
func (c *conn) closeStream(st *stream, err error) bool {
	if !c.markClosed(st) {
		return false
	}
	c.failClosed(st, err)
	return true
}

func (c *conn) markClosed(st *stream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.closed {
		return false
	}
	st.reset = true
	st.closed = true
	c.dropStreamLocked(st.id)
	return true
}

func (c *conn) failClosed(st *stream, err error) {
	c.w.mu.Lock()
	st.failSendLocked(err)
	c.w.mu.Unlock()
	st.failRecv(err)
	st.endContext()
	c.role.onStreamClosed(st)
}

// localEnded records that END_STREAM was written for st; rst asks for
// RST_STREAM(NO_ERROR) if the peer has not ended its side.
func (c *conn) localEnded(st *stream, rst bool) {
	c.mu.Lock()
	st.lEnd = true
	done := c.finishLocked(st)
	c.mu.Unlock()
	if done {
		c.streamDone(st)
	} else if rst {
		c.resetStream(st, http2.ErrCodeNo, ErrStreamClosed)
	}
}

// remoteEnded records that END_STREAM was received for st.
func (c *conn) remoteEnded(st *stream) {
	c.mu.Lock()
	st.rEnd = true
	done := c.finishLocked(st)
	c.mu.Unlock()
	if done {
		c.streamDone(st)
	}
}

func (c *conn) finishLocked(st *stream) bool {
	if st.closed || !st.lEnd || !st.rEnd {
		return false
	}
	st.closed = true
	c.dropStreamLocked(st.id)
	return true
}

// addStreamLocked and dropStreamLocked change c.streams, and its length
// that the writer reads without c.mu (nstreams). Called with c.mu held.
func (c *conn) addStreamLocked(st *stream) {
	c.streams[st.id] = st
	c.nstreams.Add(1)
}

func (c *conn) dropStreamLocked(id uint32) {
	delete(c.streams, id)
	c.nstreams.Add(-1)
}

func (c *conn) streamDone(st *stream) {
	st.endContext()
	c.role.onStreamClosed(st)
}

// consumed returns flow-control credit for n bytes read by the application
// (streamInc is the stream-level increment already accounted, 0 for none).
func (c *conn) consumed(id uint32, n int, streamInc int64) {
	c.flowMu.Lock()
	c.recvUnacked += int64(n)
	var connInc int64
	if c.recvUnacked >= c.connUpdateAt {
		connInc = c.recvUnacked
		c.recvUnacked = 0
		c.recvAvail += connInc
	}
	c.flowMu.Unlock()
	if connInc == 0 && streamInc == 0 {
		return
	}
	w := c.w
	w.mu.Lock()
	if connInc > 0 {
		w.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, val: uint32(connInc)}, false)
	}
	if streamInc > 0 && id != 0 {
		w.queueLocked(ctrlFrame{kind: ctrlWindowUpdate, streamID: id, val: uint32(streamInc)}, false)
	}
	w.mu.Unlock()
	w.signal()
}

// readData handles a DATA frame, reading its payload straight into the
// stream's buffer.
func (c *conn) readData(fh http2.FrameHeader) error {
	id := fh.StreamID
	length := int(fh.Length)
	if id == 0 {
		return connErr{http2.ErrCodeProtocol, "DATA on stream 0"}
	}
	c.flowMu.Lock()
	if int64(length) > c.recvAvail {
		c.flowMu.Unlock()
		return connErr{http2.ErrCodeFlowControl, "connection flow-control window exceeded"}
	}
	c.recvAvail -= int64(length)
	c.flowMu.Unlock()

	c.mu.Lock()
	st := c.streams[id]
	idle := st == nil && c.idleLocked(id)
	ignore := st == nil && (c.recentlyResetLocked(id) || (c.goAwaySent && id > c.goAwayLast))
	c.mu.Unlock()
	if idle {
		return connErr{http2.ErrCodeProtocol, "DATA on idle stream"}
	}

	body, pad := length, 0
	if fh.Flags.Has(http2.FlagDataPadded) {
		if length == 0 {
			return connErr{http2.ErrCodeFrameSize, "padded DATA without pad length"}
		}
		b, err := c.br.ReadByte()
		if err != nil {
			return err
		}
		pad = int(b)
		body = length - 1 - pad
		if body < 0 {
			return connErr{http2.ErrCodeProtocol, "DATA padding longer than payload"}
		}
	}

	if st == nil {
		if _, err := c.br.Discard(body + pad); err != nil {
			return err
		}
		c.consumed(0, length, 0)
		if ignore {
			return nil
		}
		return streamErr{id, http2.ErrCodeStreamClosed, "DATA on closed stream"}
	}

	// Read the payload: large ones into pooled chunks taken over by the
	// stream buffer, small ones through a scratch buffer.
	chunks, lens := c.rchunks[:0], c.rlens[:0]
	var small []byte
	if body >= 16<<10 {
		for left := body; left > 0; {
			k := min(left, chunkSizes[len(chunkSizes)-1])
			ch := getChunk(k)
			chunks, lens = append(chunks, ch), append(lens, k)
			left -= k
			if _, err := io.ReadFull(c.br, (*ch)[:k]); err != nil {
				for _, ch := range chunks {
					putChunk(ch)
				}
				clear(chunks)
				return err
			}
		}
	} else if body > 0 {
		if cap(c.scratch) < body {
			c.scratch = make([]byte, 16<<10)
		}
		small = c.scratch[:body]
		if _, err := io.ReadFull(c.br, small); err != nil {
			return err
		}
	}
	c.rchunks, c.rlens = chunks, lens
	defer clear(chunks)
	if pad > 0 {
		if _, err := c.br.Discard(pad); err != nil {
			return err
		}
	}
	release := func() {
		for _, ch := range chunks {
			putChunk(ch)
		}
	}

	end := fh.Flags.Has(http2.FlagDataEndStream)
	st.mu.Lock()
	var serr error
	switch {
	case st.recvEnd:
		serr = streamErr{id, http2.ErrCodeStreamClosed, "DATA after END_STREAM"}
	case int64(length) > st.recvAvail:
		serr = streamErr{id, http2.ErrCodeFlowControl, "stream flow-control window exceeded"}
	case st.declLen >= 0 && (st.gotLen+int64(body) > st.declLen || (end && st.gotLen+int64(body) != st.declLen)):
		serr = streamErr{id, http2.ErrCodeProtocol, "DATA length differs from content-length"}
	}
	if serr != nil || st.localClosed || st.rerr != nil {
		st.mu.Unlock()
		release()
		c.consumed(0, length, 0)
		return serr
	}
	st.recvAvail -= int64(length)
	st.gotLen += int64(body)
	if small != nil {
		st.buf.Write(small)
	}
	for i, ch := range chunks {
		st.buf.appendChunk(ch, lens[i])
	}
	// Padding is returned at once: it never reaches the reader.
	padCredit := int64(length - body)
	var inc int64
	if padCredit > 0 {
		st.unacked += padCredit
		if !end && st.unacked >= c.streamUpdateAt {
			inc = st.unacked
			st.recvAvail += inc
			st.unacked = 0
		}
	}
	if end {
		st.recvEnd = true
		if st.rerr == nil {
			st.rerr = io.EOF
		}
	}
	st.unlockNotifyData()
	if padCredit > 0 {
		c.consumed(id, int(padCredit), inc)
	}
	if end {
		c.remoteEnded(st)
	}
	return nil
}

// teardown ends the connection after serve returned: stops the writer,
// closes the socket, fails every stream and waits for helper goroutines.
func (c *conn) teardown(cause error) {
	c.mu.Lock()
	c.closed = true
	if c.closeErr == nil {
		c.closeErr = cause
	}
	streams := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	c.mu.Unlock()
	c.w.mu.Lock()
	graceful := c.w.closing
	c.w.mu.Unlock()
	if !graceful {
		c.w.kill(cause)
	}
	<-c.w.done
	// Ended by our GOAWAY for the peer's error: the reader stopped and the
	// writer has sent the GOAWAY (and FIN, where it could). The socket stays
	// open after the streams are failed, taking in what the peer still sends
	// until it closes, for lingerTimeout at most: closing with unread bytes
	// would send a reset, which can destroy the GOAWAY before the peer
	// reads it.
	_, ours := cause.(connErr)
	linger := ours && graceful
	if !linger {
		c.nc.Close()
	}
	c.mu.Lock()
	err := connLost(c.closeErr)
	c.mu.Unlock()
	for _, st := range streams {
		c.closeStream(st, err)
	}
	close(c.done)
	if linger {
		_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.Copy(io.Discard, c.nc)
		c.nc.Close()
	}
	c.wg.Wait()
}

// fail records cause as the reason the connection ends and closes it
// without GOAWAY.
func (c *conn) fail(cause error) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.closeErr = cause
	}
	c.mu.Unlock()
	c.w.kill(cause)
}

// isClosed reports whether the connection has ended.
func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
