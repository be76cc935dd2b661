package h2tunnel

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wsmesh/wsmesh/internal/sockio"
)

var errWriterClosed = errors.New("h2tunnel: connection closed")

type ctrlKind uint8

const (
	ctrlSettings ctrlKind = iota
	ctrlSettingsAck
	ctrlPing
	ctrlPingAck
	ctrlWindowUpdate
	ctrlRST
	ctrlGoAway
	ctrlHeaders
	ctrlTableSize
)

// ctrlFrame is a queued non-DATA frame. Control frames are written in
// queue order, before any DATA, which keeps HEADERS ahead of their stream's
// DATA and new stream ids increasing on the wire.
type ctrlFrame struct {
	kind     ctrlKind
	streamID uint32
	code     http2.ErrCode
	val      uint32
	ping     [8]byte
	settings []http2.Setting
	fields   []hpack.HeaderField
	end      bool
	st       *stream
	debug    string
}

// writer owns the write side of a connection: the Framer, the HPACK
// encoder and the bufio.Writer. One goroutine (run) writes; everyone else
// queues under mu.
type writer struct {
	c    *conn
	nc   net.Conn
	bw   *bufio.Writer
	wv   vectorWriter // the socket, when it can take a frame in one writev
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	dhdr [9]byte

	mu        sync.Mutex
	ctrl      []ctrlFrame
	spare     []ctrlFrame
	ready     []*stream // streams with DATA (or a lone END_STREAM) to send
	readyHead int
	side      []byte // whole DATA frames copied in by small Writes (tryDirectLocked)
	sideSpare []byte
	connWin   int64 // peer's connection-level window for our DATA
	maxFrame  int   // peer's SETTINGS_MAX_FRAME_SIZE
	initWin   int64 // peer's SETTINGS_INITIAL_WINDOW_SIZE
	closing   bool  // write what is queued, then stop
	writing   bool  // the writer goroutine or a direct Write owns bw
	stopped   bool
	err       error
	wake      chan struct{}
	done      chan struct{}
	preface   bool
}

func newWriter(c *conn, nc net.Conn, bufSize int, preface bool) *writer {
	sc := sockio.Wrap(nc)
	wv, _ := sc.(vectorWriter)
	w := &writer{
		c:        c,
		nc:       nc,
		bw:       bufio.NewWriterSize(sc, bufSize),
		wv:       wv,
		connWin:  65535,
		maxFrame: 16384,
		initWin:  65535,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		preface:  preface,
	}
	w.fr = http2.NewFramer(w.bw, nil)
	w.enc = hpack.NewEncoder(&w.hbuf)
	return w
}

func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// queue appends a control frame. It reports false when the writer has
// stopped or the queue is over its bound (the caller treats that as a
// flood).
func (w *writer) queue(f ctrlFrame, capped bool) bool {
	w.mu.Lock()
	ok := w.queueLocked(f, capped)
	w.mu.Unlock()
	if ok {
		w.signal()
	}
	return ok
}

// Frames the peer can make us send (ACKs, RST_STREAM for its errors) are
// capped; frames we originate (HEADERS, WINDOW_UPDATE, our RST_STREAM) are
// not.
func (w *writer) queueLocked(f ctrlFrame, capped bool) bool {
	if w.stopped || w.closing {
		return false
	}
	if capped && len(w.ctrl) >= maxQueuedControlFrames {
		return false
	}
	w.ctrl = append(w.ctrl, f)
	return true
}

// pushReadyLocked puts st at the tail of the round-robin queue.
func (w *writer) pushReadyLocked(st *stream) {
	if st.inReady {
		return
	}
	st.inReady = true
	w.ready = append(w.ready, st)
}

// closeAfterQueued makes the writer stop once the queued control frames
// (typically a GOAWAY) are written and flushed; DATA still queued is
// abandoned. The final write is bounded by writeCloseTimeout.
func (w *writer) closeAfterQueued() {
	w.mu.Lock()
	if w.stopped || w.closing {
		w.mu.Unlock()
		return
	}
	w.closing = true
	w.mu.Unlock()
	w.nc.SetWriteDeadline(time.Now().Add(writeCloseTimeout))
	w.signal()
}

// finalGoAway replaces whatever is queued with one GOAWAY and stops the
// writer after it. Used for connection errors, including floods where the
// queue is full.
func (w *writer) finalGoAway(lastID uint32, code http2.ErrCode, debug string) {
	w.mu.Lock()
	if w.stopped || w.closing {
		w.mu.Unlock()
		return
	}
	if code != http2.ErrCodeNo {
		// HEADERS already encoded or not, the connection is over.
		clear(w.ctrl)
		w.ctrl = w.ctrl[:0]
	}
	w.ctrl = append(w.ctrl, ctrlFrame{kind: ctrlGoAway, val: lastID, code: code, debug: debug})
	w.closing = true
	w.mu.Unlock()
	w.nc.SetWriteDeadline(time.Now().Add(writeCloseTimeout))
	w.signal()
}

// kill stops the writer at once.
func (w *writer) kill(err error) {
	w.mu.Lock()
	if !w.stopped {
		w.stopped = true
		w.err = err
	}
	w.mu.Unlock()
	w.signal()
	w.nc.SetWriteDeadline(time.Unix(1, 0))
}

// readyLen is the number of queued ready streams.
func (w *writer) readyLen() int { return len(w.ready) - w.readyHead }

func (w *writer) popReadyLocked() *stream {
	s := w.ready[w.readyHead]
	w.ready[w.readyHead] = nil
	w.readyHead++
	if w.readyHead == len(w.ready) {
		w.ready = w.ready[:0]
		w.readyHead = 0
	} else if w.readyHead >= 256 && w.readyHead*2 >= len(w.ready) {
		n := copy(w.ready, w.ready[w.readyHead:])
		clear(w.ready[n:])
		w.ready = w.ready[:n]
		w.readyHead = 0
	}
	s.inReady = false
	return s
}

// nextDataLocked picks the next DATA frame to write, round-robin over ready
// streams, consuming flow-control windows.
func (w *writer) nextDataLocked() (st *stream, chunk []byte, end bool) {
	for n := w.readyLen(); n > 0; n-- {
		s := w.popReadyLocked()
		if s.werr != nil || s.sentEnd || s.endInHeaders {
			continue
		}
		if len(s.pend) == 0 {
			if s.pendEnd {
				s.inflight = true
				return s, nil, true
			}
			continue
		}
		if s.sendWin <= 0 {
			continue // re-queued by WINDOW_UPDATE or SETTINGS
		}
		if w.connWin <= 0 {
			// Blocked on the connection window: keep its place and look
			// for streams that only need END_STREAM.
			w.pushReadyLocked(s)
			continue
		}
		k := int64(len(s.pend))
		k = min(k, int64(w.maxFrame), s.sendWin, w.connWin)
		chunk = s.pend[:k]
		s.pend = s.pend[k:]
		s.sendWin -= k
		w.connWin -= k
		s.inflight = true
		end = len(s.pend) == 0 && s.pendEnd
		if len(s.pend) > 0 && s.sendWin > 0 {
			w.pushReadyLocked(s)
		}
		return s, chunk, end
	}
	return nil, nil, false
}

// run is the writer goroutine.
func (w *writer) run() {
	defer close(w.done)
	err := w.loop()
	w.mu.Lock()
	w.stopped = true
	if w.err == nil {
		w.err = err
	}
	clear(w.ready)
	w.ready = nil
	w.side, w.sideSpare = nil, nil
	w.mu.Unlock()
	if err == errWriterClosed {
		// A graceful end (the last GOAWAY is written): send FIN and let the
		// reader take in what the peer still sends until it closes too, or
		// for lingerTimeout, before the socket is closed. Closing with
		// unread bytes would send a reset, which can destroy the GOAWAY
		// before the peer reads it.
		if cw, ok := w.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = w.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
			return // the reader closes the socket when it ends
		}
	}
	// Closing the socket wakes the reader, which tears the connection down
	// and fails the streams.
	w.nc.Close()
}

// lingerTimeout bounds how long a gracefully ended connection waits for
// the peer to close its side.
const lingerTimeout = time.Second

func (w *writer) loop() error {
	if w.preface {
		if _, err := w.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
	}
	// copied: bw holds frames copied in by Writes (small messages);
	// yielded: we already yielded once before this flush.
	copied, yielded := false, false
	for {
		w.mu.Lock()
		if w.stopped {
			w.mu.Unlock()
			return w.err
		}
		if w.writing {
			// A Write is sending its frame directly; it signals when done.
			w.mu.Unlock()
			<-w.wake
			continue
		}
		if len(w.side) > 0 {
			// Frames copied in by Writes (tryDirectLocked) go first: they
			// were accepted before anything queued after them, and a
			// RST_STREAM queued since must follow its stream's DATA.
			copied = true
			side := w.side
			w.side = w.sideSpare[:0]
			w.sideSpare = nil
			w.writing = true
			w.mu.Unlock()
			_, err := w.bw.Write(side)
			w.mu.Lock()
			w.writing = false
			w.sideSpare = side[:0]
			w.mu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		if len(w.ctrl) > 0 {
			batch := w.ctrl
			w.ctrl = w.spare[:0]
			w.spare = nil
			w.writing = true
			w.mu.Unlock()
			err := w.writeCtrl(batch)
			clear(batch)
			w.mu.Lock()
			w.writing = false
			w.spare = batch[:0]
			w.mu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		var st *stream
		var chunk []byte
		var end bool
		if !w.closing {
			st, chunk, end = w.nextDataLocked()
		}
		if st != nil {
			w.writing = true
			w.mu.Unlock()
			err := w.writeData(st.id, chunk, end)
			w.mu.Lock()
			w.writing = false
			st.inflight = false
			rst := false
			if end {
				st.sentEnd = true
				rst = st.rstAfterEnd
			}
			if len(st.pend) == 0 || st.werr != nil {
				st.signalWrite()
			}
			w.mu.Unlock()
			if err != nil {
				return err
			}
			if end {
				w.c.localEnded(st, rst)
			}
			continue
		}
		closing := w.closing
		if w.bw.Buffered() > 0 && copied && !yielded && !closing {
			// Before flushing small messages, let the goroutines that are
			// runnable now (typically relays woken by the same netpoll as
			// the Write that woke us) copy their frames in, so that they
			// leave in this write(2). Nothing runnable: Gosched returns
			// at once. Without it, each would find bw just flushed and
			// nearly every frame would cost a write(2) again (measured:
			// 64 streams, 1.2 instead of 0.09 writes per message).
			yielded = true
			w.mu.Unlock()
			runtime.Gosched()
			continue
		}
		copied, yielded = false, false
		if w.bw.Buffered() > 0 {
			w.writing = true
			w.mu.Unlock()
			err := w.bw.Flush()
			w.mu.Lock()
			w.writing = false
			w.mu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		w.mu.Unlock()
		if closing {
			return errWriterClosed
		}
		<-w.wake
	}
}

// tryDirectLocked takes p as DATA without waiting for the writer goroutine
// when flow control admits all of it and no control frame (maybe st's
// HEADERS) is queued ahead of it:
//
//   - a small p (up to maxCopiedWrite) is copied as a whole frame into
//     w.side and Write returns at once; the writer goroutine writes the
//     copies first thing, and yields once before it flushes, so that the
//     frames of every stream that is ready at about the same time leave in
//     one write(2) (64 streams of 1 KiB ping-pong: ~23 frames per write
//     instead of ~1.3). Such a Write pays one goroutine switch, not a
//     wake-up round trip, since it does not wait for the writer. On the
//     connection's only open stream, with the writer idle, there is
//     nothing to gather: the Write writes the frame to the socket itself
//     (flushSide) and returns after that;
//   - a larger p that fits in one frame, when the writer is idle and
//     nothing is queued, is written and flushed by the caller itself.
//
// Called with w.mu held; it returns with w.mu released when it reports
// true.
func (w *writer) tryDirectLocked(st *stream, p []byte) (bool, error) {
	if !w.admitsLocked(st, p) {
		return false, nil
	}
	n := int64(len(p))
	if w.copiesLocked(p) {
		w.copySideLocked(st, p)
		if w.writing {
			// The owner of bw looks at side before letting go.
			w.mu.Unlock()
			return true, nil
		}
		if w.writesItselfLocked(st) {
			// No other stream to gather frames with: write now, without
			// a hand-off to the writer goroutine.
			w.writing = true
			w.mu.Unlock()
			if err := w.flushSide(); err != nil {
				return true, connLost(err)
			}
			return true, nil
		}
		w.mu.Unlock()
		w.signal()
		return true, nil
	}
	if w.writing || w.readyLen() > 0 || len(w.side) > 0 || st.dl.isSet(writeDL) {
		return false, nil // the writer's turn, or a deadline to honour
	}
	st.sendWin -= n
	w.connWin -= n
	w.writing = true
	w.mu.Unlock()
	err := w.writeDataNow(st.id, p)
	w.mu.Lock()
	w.writing = false
	more := len(w.ctrl) > 0 || w.readyLen() > 0 || len(w.side) > 0
	w.mu.Unlock()
	if err != nil {
		w.kill(err)
		return true, connLost(err)
	}
	if more {
		w.signal() // work queued meanwhile waited for us
	}
	return true, nil
}

// admitsLocked reports whether p can go out as one DATA frame of st now,
// as far as flow control, queued control frames (maybe st's HEADERS) and
// the writer's state go.
func (w *writer) admitsLocked(st *stream, p []byte) bool {
	n := int64(len(p))
	return directWrites && !w.closing && !w.stopped && len(w.ctrl) == 0 &&
		len(p) <= w.maxFrame && n <= st.sendWin && n <= w.connWin
}

// copiesLocked reports whether p is small enough to be copied into w.side,
// and w.side has room for it.
func (w *writer) copiesLocked(p []byte) bool {
	return coalesceWrites.Load() && len(p) <= maxCopiedWrite && len(w.side)+frameHeaderLen+len(p) <= maxSideBytes
}

// copySideLocked takes p, admitted, as a DATA frame of st copied into
// w.side.
func (w *writer) copySideLocked(st *stream, p []byte) {
	n := int64(len(p))
	st.sendWin -= n
	w.connWin -= n
	w.side = appendDataFrame(w.side, st.id, p)
}

// writesItselfLocked reports whether a Write of st writes its frame to
// the socket itself rather than leaving it to the writer goroutine: st is
// the connection's only stream (nothing to gather its frame with) and has
// no write deadline (a socket write can block, and only the writer path
// lets the deadline end the Write).
func (w *writer) writesItselfLocked(st *stream) bool {
	return loneWrites.Load() && w.c.nstreams.Load() == 1 && !st.dl.isSet(writeDL)
}

// flushSide writes the frames copied into w.side to the socket on the
// calling goroutine, which has just set w.writing (it owns bw), and then
// lets go of bw, waking the writer goroutine when anything was queued or
// copied meanwhile. A write error kills the writer.
func (w *writer) flushSide() error {
	w.mu.Lock()
	side := w.side
	w.side = w.sideSpare[:0]
	w.sideSpare = nil
	w.mu.Unlock()
	_, err := w.bw.Write(side)
	if err == nil {
		err = w.bw.Flush()
	}
	w.mu.Lock()
	w.sideSpare = side[:0]
	w.writing = false
	more := len(w.side) > 0 || len(w.ctrl) > 0 || w.readyLen() > 0 || w.closing || w.stopped
	w.mu.Unlock()
	if err != nil {
		w.kill(err)
		return err
	}
	if more {
		w.signal()
	}
	return nil
}

const frameHeaderLen = 9

// appendDataFrame appends a DATA frame (no flags) carrying p to b.
func appendDataFrame(b []byte, id uint32, p []byte) []byte {
	return append(appendDataHeader(b, id, len(p), false), p...)
}

// appendDataHeader appends the header of a DATA frame of n bytes to b.
func appendDataHeader(b []byte, id uint32, n int, end bool) []byte {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), flags,
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// vectorWriter writes two slices as one (sockio.Conn: one writev(2)).
type vectorWriter interface {
	Writev(a, b []byte) (int, error)
}

// writeDataNow writes a DATA frame to the socket now. When nothing is
// buffered, header and payload go out together in one writev instead of
// the payload being copied into bw first. The caller owns bw.
func (w *writer) writeDataNow(id uint32, p []byte) error {
	if w.wv == nil || w.bw.Buffered() > 0 {
		err := w.writeData(id, p, false)
		if err == nil {
			err = w.bw.Flush()
		}
		return err
	}
	_, err := w.wv.Writev(w.dataHeader(id, len(p), false), p)
	return err
}

func (w *writer) writeData(id uint32, p []byte, end bool) error {
	if _, err := w.bw.Write(w.dataHeader(id, len(p), end)); err != nil {
		return err
	}
	_, err := w.bw.Write(p)
	return err
}

// dataHeader fills w.dhdr with the header of a DATA frame of n bytes.
func (w *writer) dataHeader(id uint32, n int, end bool) []byte {
	return appendDataHeader(w.dhdr[:0], id, n, end)
}

func (w *writer) writeCtrl(batch []ctrlFrame) error {
	for i := range batch {
		f := &batch[i]
		var err error
		switch f.kind {
		case ctrlSettings:
			err = w.fr.WriteSettings(f.settings...)
		case ctrlSettingsAck:
			err = w.fr.WriteSettingsAck()
		case ctrlPing:
			err = w.fr.WritePing(false, f.ping)
		case ctrlPingAck:
			err = w.fr.WritePing(true, f.ping)
		case ctrlWindowUpdate:
			err = w.fr.WriteWindowUpdate(f.streamID, f.val)
		case ctrlRST:
			err = w.fr.WriteRSTStream(f.streamID, f.code)
		case ctrlGoAway:
			err = w.fr.WriteGoAway(f.val, f.code, []byte(f.debug))
		case ctrlTableSize:
			w.enc.SetMaxDynamicTableSizeLimit(f.val)
		case ctrlHeaders:
			err = w.writeHeaders(f)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) writeHeaders(f *ctrlFrame) error {
	w.hbuf.Reset()
	for _, hf := range f.fields {
		if err := w.enc.WriteField(hf); err != nil {
			return err
		}
	}
	block := w.hbuf.Bytes()
	w.mu.Lock()
	max := w.maxFrame
	w.mu.Unlock()
	first := min(len(block), max)
	err := w.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID:      f.streamID,
		BlockFragment: block[:first],
		EndStream:     f.end,
		EndHeaders:    first == len(block),
	})
	block = block[first:]
	for err == nil && len(block) > 0 {
		k := min(len(block), max)
		err = w.fr.WriteContinuation(f.streamID, k == len(block), block[:k])
		block = block[k:]
	}
	if err == nil && f.end && f.st != nil {
		w.mu.Lock()
		f.st.sentEnd = true
		rst := f.st.rstAfterEnd
		w.mu.Unlock()
		w.c.localEnded(f.st, rst)
	}
	return err
}

// directWrites enables tryDirectLocked (off: every DATA frame goes through
// the writer goroutine, and its Write waits for it).
var directWrites = true

// coalesceWrites enables the copied-frame path of tryDirectLocked (off:
// every frame that fits is written and flushed by its Write, the behaviour
// before; benchmarks compare both). Writes up to maxCopiedWrite bytes are
// copied, at most maxSideBytes per connection between two writes to the
// socket; larger ones are not copied (direct or through the writer).
var coalesceWrites atomic.Bool

// loneWrites makes a small Write on a connection's only open stream
// write its frame itself when the writer is idle (flushSide) instead of
// handing it to the writer goroutine: with one stream there are no other
// frames to gather, and the hand-off (waking the writer, its yield) only
// adds to the message's latency.
var loneWrites atomic.Bool

func init() {
	coalesceWrites.Store(true)
	loneWrites.Store(true)
}

const (
	maxCopiedWrite = 16 << 10
	maxSideBytes   = 256 << 10
)
