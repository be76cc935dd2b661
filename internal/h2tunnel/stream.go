package h2tunnel

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// stream is the state shared by client Streams and ServerStreams. Its
// channels and context are made when first needed: a sidecar holds many
// idle streams, whose reads wait in no goroutine (see NotifyReadable).
type stream struct {
	c  *conn
	id uint32

	// Flags, grouped to keep the struct small (a sidecar holds one stream
	// per idle WebSocket). Each is guarded as its group says.

	// Receive side, guarded by mu.
	recvEnd     bool // END_STREAM received
	localClosed bool // Close was called
	gotHead     bool // read loop only: the peer's head arrived
	headDone    bool // head (or headErr) is final
	// Send side, guarded by c.w.mu.
	pendEnd      bool // END_STREAM requested
	endInHeaders bool // END_STREAM rides on a queued HEADERS frame
	sentEnd      bool // END_STREAM written
	inflight     bool // the writer is writing a chunk of pend
	inReady      bool
	timedOut     bool // the current Write hit its deadline
	respWritten  bool // server: response HEADERS queued
	rstAfterEnd  bool // send RST_STREAM(NO_ERROR) once END_STREAM is written
	// Lifecycle, guarded by c.mu.
	lEnd, rEnd, reset, closed bool
	// Server side, guarded by mu.
	ctxEnded bool // the stream ended; a context made now is cancelled

	// Receive side, guarded by mu.
	mu         sync.Mutex
	buf        dataBuf
	recvAvail  int64 // bytes the peer may still send (stream window)
	unacked    int64 // consumed, not yet returned by WINDOW_UPDATE
	rerr       error // returned by Read once buf is empty (io.EOF after END_STREAM)
	declLen    int64 // content-length of the peer's message, -1 if none
	gotLen     int64
	head       chan struct{} // closed when headDone; made by the first waiter
	resp       *Response     // client: response head
	headErr    error
	rnotify    chan struct{} // made by the first Read that waits
	onReadable func()        // called once by the next unlockWake

	// Send side, guarded by c.w.mu.
	wmu     sync.Mutex // serializes Writes
	sendWin int64
	pend    []byte // rest of the current Write
	unsent  int    // bytes of pend dropped by a reset or deadline
	werr    error
	wdone   chan struct{} // made by the first Write that waits for the writer

	// Read and write deadlines (see deadlines).
	dl deadlines

	// Server side, guarded by mu: the stream's context, made when first
	// asked for (see ServerStream.Context).
	sctx *streamContext
}

// streamContext is a server stream's context and its cancel function.
type streamContext struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newStream(c *conn, id uint32) *stream {
	return &stream{
		c:         c,
		id:        id,
		recvAvail: c.ourStreamWin,
		declLen:   -1,
	}
}

// context returns the stream's context, made from parent on first use.
func (st *stream) context(parent context.Context) context.Context {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sctx == nil {
		ctx, cancel := context.WithCancel(parent)
		st.sctx = &streamContext{ctx, cancel}
		if st.ctxEnded {
			cancel()
		}
	}
	return st.sctx.ctx
}

// endContext cancels the stream's context, now or when it is made.
func (st *stream) endContext() {
	st.mu.Lock()
	st.ctxEnded = true
	sctx := st.sctx
	st.mu.Unlock()
	if sctx != nil {
		sctx.cancel()
	}
}

// readWaitLocked returns the channel a reader waits on for unlockNotifyRead.
// Called with st.mu held.
func (st *stream) readWaitLocked() chan struct{} {
	if st.rnotify == nil {
		st.rnotify = make(chan struct{}, 1)
	}
	return st.rnotify
}

// unlockNotifyRead releases st.mu, held by a caller that has just made a
// read possible (the end of the stream, an error, Close), and wakes the
// reader: a Read waiting on rnotify, or the readiness callback, on a new
// goroutine (the caller may hold other locks).
func (st *stream) unlockNotifyRead() {
	if f := st.unlockWake(); f != nil {
		go f()
	}
}

// unlockNotifyData is unlockNotifyRead for the connection's reader when it
// has just buffered DATA, holding no other lock: the readiness callback
// runs on the reader's goroutine (see NotifyReadable).
func (st *stream) unlockNotifyData() {
	if f := st.unlockWake(); f != nil {
		f()
	}
}

// unlockWake releases st.mu, wakes a Read waiting on rnotify and returns
// the readiness callback to call, if any.
func (st *stream) unlockWake() func() {
	ch, f := st.rnotify, st.onReadable
	st.onReadable = nil
	st.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return f
}

// notifyReadable arranges for f to be called by the next unlockNotifyRead
// or unlockNotifyData,
// unless read would not block already (then it reports false).
func (st *stream) notifyReadable(f func()) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.localClosed || st.buf.Len() > 0 || st.rerr != nil {
		return false
	}
	st.onReadable = f
	return true
}

// signalWrite wakes a Write waiting on st. Called with c.w.mu held.
func (st *stream) signalWrite() {
	if st.wdone == nil {
		return // no Write has waited yet
	}
	select {
	case st.wdone <- struct{}{}:
	default:
	}
}

// setHead publishes the peer's head (or an error instead of it).
func (st *stream) setHead(resp *Response, err error) {
	st.mu.Lock()
	if st.headDone {
		st.mu.Unlock()
		return
	}
	st.resp, st.headErr, st.headDone = resp, err, true
	if st.head != nil {
		close(st.head) // its waiter holds it; the stream need not
		st.head = nil
	}
	st.mu.Unlock()
}

// failRecv makes Read return err once the buffer is drained (unless the
// peer already ended the stream cleanly).
func (st *stream) failRecv(err error) {
	st.mu.Lock()
	if st.rerr == nil {
		st.rerr = err
	}
	st.unlockNotifyRead()
	st.setHead(nil, err)
}

// failSend makes pending and future Writes return err. Called with c.w.mu
// held.
func (st *stream) failSendLocked(err error) {
	if st.werr == nil {
		st.werr = err
	}
	if len(st.pend) > 0 {
		st.unsent = len(st.pend)
		st.pend = nil
	}
	st.signalWrite()
}

func (st *stream) read(p []byte) (int, error) {
	for {
		st.mu.Lock()
		if st.localClosed {
			st.mu.Unlock()
			return 0, ErrStreamClosed
		}
		if st.buf.Len() > 0 {
			return st.unlockConsume(p), nil
		}
		if st.rerr != nil {
			err := st.rerr
			st.mu.Unlock()
			return 0, err
		}
		ch := st.readWaitLocked()
		st.mu.Unlock()
		select {
		case <-ch:
		case <-st.dl.waitLater(readDL):
			st.mu.Lock()
			more := st.buf.Len() > 0 || st.rerr != nil
			st.mu.Unlock()
			if !more {
				return 0, os.ErrDeadlineExceeded
			}
		}
	}
}

// unlockConsume reads buffered bytes into p, releases st.mu (held by the
// caller, who saw bytes buffered) and returns the flow-control credit.
func (st *stream) unlockConsume(p []byte) int {
	if len(p) == 0 {
		st.mu.Unlock()
		return 0
	}
	n := st.buf.Read(p)
	var inc int64
	st.unacked += int64(n)
	if !st.recvEnd && st.rerr == nil && st.unacked >= st.c.streamUpdateAt {
		inc = st.unacked
		st.recvAvail += inc
		st.unacked = 0
	}
	st.mu.Unlock()
	st.c.consumed(st.id, n, inc)
	return n
}

// readNoWait is read without waiting: (0, nil) when nothing is buffered
// and the stream has not ended.
func (st *stream) readNoWait(p []byte) (int, error) {
	st.mu.Lock()
	switch {
	case st.localClosed:
		st.mu.Unlock()
		return 0, ErrStreamClosed
	case st.buf.Len() > 0:
		return st.unlockConsume(p), nil
	}
	err := st.rerr
	st.mu.Unlock()
	return 0, err
}

// waitReadable blocks until read would not block: data is buffered, the
// stream ended or failed, or the read deadline passed. It consumes nothing.
func (st *stream) waitReadable() error {
	for {
		st.mu.Lock()
		if st.localClosed {
			st.mu.Unlock()
			return ErrStreamClosed
		}
		if st.buf.Len() > 0 || st.rerr != nil {
			st.mu.Unlock()
			return nil
		}
		ch := st.readWaitLocked()
		st.mu.Unlock()
		select {
		case <-ch:
		case <-st.dl.waitLater(readDL):
			st.mu.Lock()
			more := st.buf.Len() > 0 || st.rerr != nil
			st.mu.Unlock()
			if !more {
				return os.ErrDeadlineExceeded
			}
		}
	}
}

func (st *stream) write(p []byte) (int, error) {
	st.wmu.Lock() // one Write at a time per stream
	defer st.wmu.Unlock()
	w, err := st.lockWritable()
	if err != nil {
		return 0, err
	}
	if len(p) == 0 {
		w.mu.Unlock()
		return 0, nil
	}
	if ok, err := w.tryDirectLocked(st, p); ok {
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if st.wdone == nil {
		st.wdone = make(chan struct{}, 1)
	}
	select {
	case <-st.wdone: // drop a stale wakeup
	default:
	}
	st.pend = p
	st.unsent = 0
	st.timedOut = false
	if st.sendWin > 0 {
		w.pushReadyLocked(st)
	}
	w.mu.Unlock()
	w.signal()
	dl := st.dl.wait(writeDL)
	for {
		select {
		case <-st.wdone:
		case <-dl:
			dl = nil
			w.mu.Lock()
			if len(st.pend) > 0 {
				st.unsent = len(st.pend)
				st.pend = nil
				st.timedOut = true
			}
			w.mu.Unlock()
		}
		w.mu.Lock()
		if st.inflight || (len(st.pend) > 0 && st.werr == nil) {
			w.mu.Unlock()
			continue
		}
		n := len(p) - len(st.pend) - st.unsent
		st.pend = nil
		var err error
		if n < len(p) {
			switch {
			case st.werr != nil:
				err = st.werr
			case st.timedOut:
				err = os.ErrDeadlineExceeded
			default:
				err = io.ErrShortWrite
			}
		}
		st.timedOut = false
		w.mu.Unlock()
		return n, err
	}
}

// tryWrite takes p as DATA only if that needs no waiting: no other Write
// is under way, flow control admits all of p, p is small enough to be
// copied (see tryDirectLocked), and the copy is written by the writer
// goroutine or whoever is writing now, not by the caller (a lone stream's
// Write writes its frame itself, and may wait on the socket). It returns
// 0 and no error when it cannot: the caller then uses write.
func (st *stream) tryWrite(p []byte) (int, error) {
	if len(p) == 0 || !st.wmu.TryLock() {
		return 0, nil
	}
	defer st.wmu.Unlock()
	w, err := st.lockWritable()
	if err != nil {
		return 0, err
	}
	if !w.admitsLocked(st, p) || !w.copiesLocked(p) || w.writesItselfLocked(st) {
		w.mu.Unlock()
		return 0, nil
	}
	w.copySideLocked(st, p)
	writing := w.writing // the owner of bw looks at side before letting go
	w.mu.Unlock()
	if !writing {
		w.signal()
	}
	return len(p), nil
}

// lockWritable locks the connection's writer for a Write of st and
// returns it, or reports why st cannot take DATA (and leaves it unlocked).
func (st *stream) lockWritable() (*writer, error) {
	w := st.c.w
	w.mu.Lock()
	if err := st.writableLocked(); err != nil {
		w.mu.Unlock()
		return nil, err
	}
	return w, nil
}

// writableLocked reports why st cannot take DATA. Called with c.w.mu held.
func (st *stream) writableLocked() error {
	if st.werr != nil {
		return st.werr
	}
	if st.pendEnd {
		return ErrWriteAfterClose
	}
	if st.dl.expired(writeDL) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (st *stream) closeWrite() error {
	w := st.c.w
	w.mu.Lock()
	if st.pendEnd {
		w.mu.Unlock()
		return nil
	}
	if st.werr != nil {
		err := st.werr
		w.mu.Unlock()
		return err
	}
	st.pendEnd = true
	w.pushReadyLocked(st)
	w.mu.Unlock()
	w.signal()
	return nil
}

// close ends the stream from the application's side: no-op when both
// directions have ended (or will, once queued END_STREAM is written),
// otherwise RST_STREAM with code.
func (st *stream) close(code http2.ErrCode) error {
	st.mu.Lock()
	if st.localClosed {
		st.mu.Unlock()
		return nil
	}
	st.localClosed = true
	dropped := st.buf.reset()
	recvDone := st.recvEnd || st.rerr != nil
	st.unlockNotifyRead()
	if dropped > 0 {
		st.c.consumed(0, dropped, 0)
	}
	st.dl.set(readDL, time.Time{})
	st.dl.set(writeDL, time.Time{})
	st.setHead(nil, ErrStreamClosed)

	w := st.c.w
	w.mu.Lock()
	sendDone := st.pendEnd || st.werr != nil
	if code == http2.ErrCodeNo && st.pendEnd && !st.sentEnd && st.werr == nil && !recvDone {
		// The response is complete but not yet written: reset with
		// NO_ERROR right after its END_STREAM (RFC 9113 §8.1).
		st.rstAfterEnd = true
		w.mu.Unlock()
		return nil
	}
	w.mu.Unlock()
	if sendDone && recvDone {
		// Both directions are over (a queued END_STREAM still goes out).
		return nil
	}
	st.c.resetStream(st, code, ErrStreamClosed)
	return nil
}

// deadlines are a stream's read and write deadlines, under one lock.
type deadlines struct {
	mu sync.Mutex
	d  [2]deadline // indexed by readDL, writeDL
}

// Indexes of deadlines.d.
const (
	readDL  = 0
	writeDL = 1
)

// deadline is a settable timeout shared by waiting readers or writers
// (modelled on net.Pipe's), guarded by its deadlines' lock.
type deadline struct {
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes; nil if never set
}

// set sets deadline i to t; the zero t clears it.
func (ds *deadlines) set(i int, t time.Time) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	d := &ds.d[i]
	if d.cancel == nil {
		if t.IsZero() {
			return
		}
		d.cancel = make(chan struct{})
	}
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		ch := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// isSet reports whether deadline i is set, passed or not.
func (ds *deadlines) isSet(i int) bool {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	d := &ds.d[i]
	return d.timer != nil || (d.cancel != nil && isClosed(d.cancel))
}

// wait returns a channel closed when deadline i passes (nil: no deadline
// is set, and one set later is not seen).
func (ds *deadlines) wait(i int) chan struct{} {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return ds.d[i].cancel
}

// waitLater is wait for a waiter that must also see a deadline set while
// it waits (a reader a relay may stop with a past deadline).
func (ds *deadlines) waitLater(i int) chan struct{} {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	d := &ds.d[i]
	if d.cancel == nil {
		d.cancel = make(chan struct{})
	}
	return d.cancel
}

// expired reports whether deadline i has passed.
func (ds *deadlines) expired(i int) bool {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	d := &ds.d[i]
	return d.cancel != nil && isClosed(d.cancel)
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
