// Package relay moves the bytes of one proxied connection both ways once its
// HTTP head is done: a WebSocket after 101 Switching Protocols, or an opaque
// TCP stream. It forwards bytes already read past the head first, propagates
// half-close (EOF on one side becomes CloseWrite on the other) and resets,
// keeps live atomic counters, enforces an optional idle timeout, and can feed
// each direction to a wsobserve.Observer. When neither observation nor a
// non-TCP end is involved it moves the bytes with splice(2), never copying
// them into user space.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsmesh/wsmesh/internal/wsobserve"
)

// Side names one end of the relayed connection.
type Side int8

// The two ends, and none.
const (
	SideNone       Side = iota
	SideDownstream      // whoever connected to us
	SideUpstream        // whom we connected to
)

func (s Side) String() string {
	switch s {
	case SideDownstream:
		return "downstream"
	case SideUpstream:
		return "upstream"
	}
	return ""
}

// DefaultBufferSize is the copy buffer size when Options.BufferSize is 0.
const DefaultBufferSize = 32 << 10

// Options tune one Relay call. The zero value relays without idle timeout,
// observation or counters visible outside.
type Options struct {
	// IdleTimeout ends the relay when no byte has moved in either direction
	// for this long. 0 means never (the default for WebSocket). Pings and
	// pongs are bytes, so they count as activity.
	IdleTimeout time.Duration

	// Observe feeds each direction to a wsobserve.Observer (Result.Down and
	// Result.Up). DownObserver and UpObserver, when set, are used instead of
	// fresh ones, so a caller can read them while the relay runs; setting
	// either implies Observe.
	Observe                  bool
	DownObserver, UpObserver *wsobserve.Observer
	// PerMessageDeflate is passed to fresh observers (see
	// wsobserve.Observer.PerMessageDeflate).
	PerMessageDeflate bool

	// DisableSplice makes TCP-to-TCP relays copy through a buffer instead of
	// splice(2).
	DisableSplice bool

	// BufferSize is the copy buffer size; buffers of the default size come
	// from a pool.
	BufferSize int

	// Counters, when set, is updated as bytes move so that an admin endpoint
	// can show an open relay.
	Counters *Counters

	// GoingAway, when it becomes ready, ends an observed WebSocket the way a
	// server going away should (RFC 6455 §7.1.2): a close frame with
	// GoingAwayCode (default 1001) and GoingAwayReason is written to each
	// peer at the next frame boundary of the stream flowing to it, later
	// frames towards that peer are dropped, and each side is closed once
	// its own close frame arrives, or when GoingAwayTimeout (default 5s)
	// passes. An unobserved relay is closed at once.
	GoingAway        <-chan struct{}
	GoingAwayCode    int
	GoingAwayReason  string
	GoingAwayTimeout time.Duration
	// GoingAwayReasonFn, when set, gives the reason at the time GoingAway
	// fires (it replaces GoingAwayReason).
	GoingAwayReasonFn func() string
}

// Counters are live totals of one relay, safe to read at any time.
type Counters struct {
	DownToUp     atomic.Int64 // bytes read from downstream and written upstream
	UpToDown     atomic.Int64 // bytes read from upstream and written downstream
	LastActivity atomic.Int64 // Unix nanoseconds of the last byte moved (or of the start)
}

// Prefetched holds bytes already read from either side past the HTTP head,
// typically what a bufio.Reader buffered. They are written before anything
// else, counted and observed like the rest.
type Prefetched struct {
	Down []byte // read from downstream; goes upstream
	Up   []byte // read from upstream; goes downstream
}

// Result is the outcome of one Relay.
type Result struct {
	BytesDownToUp int64 // the access log's bytes_received
	BytesUpToDown int64 // the access log's bytes_sent
	FirstEOF      Side  // the side whose stream ended cleanly first, if any
	// Down and Up observed what the downstream and the upstream peer sent;
	// nil unless observing.
	Down, Up *wsobserve.Observer
	// Err is the first real error (never io.EOF): a *SideError naming the side
	// and operation, or the context's cause when ctx ended the relay.
	Err          error
	IdleTimedOut bool
	// Spliced reports that both directions used splice(2).
	Spliced bool
	// WentAway reports that GoingAway ended the relay; CloseSent counts the
	// close frames written to the peers.
	WentAway  bool
	CloseSent int
	// Lost is the side whose connection failed when the other peer was
	// told so with a close frame (1014 "upstream connection lost" to the
	// downstream peer, 1001 "downstream connection lost" to the upstream
	// peer); SideNone otherwise.
	Lost Side
}

// SideError is a read or write failure on one end of the relay.
type SideError struct {
	Side Side
	Op   string // "read" or "write"
	Err  error
}

func (e *SideError) Error() string { return fmt.Sprintf("relay: %s %s: %v", e.Op, e.Side, e.Err) }
func (e *SideError) Unwrap() error { return e.Err }

var bufPool = sync.Pool{New: func() any { b := make([]byte, DefaultBufferSize); return &b }}

type closeWriter interface{ CloseWrite() error }

// direction is one of the two copy loops.
type direction struct {
	src, dst   net.Conn
	srcSide    Side
	pre        []byte
	obs        *wsobserve.Observer
	count      *atomic.Int64
	last       *atomic.Int64
	bufSize    int
	splice     bool
	n          int64
	err        error // *SideError, or nil on clean EOF
	noHalfOpen bool  // dst cannot CloseWrite, so EOF must end the whole relay

	// Going-away state, guarded by mu (held while writing to dst and feeding
	// the observer, so a close frame never lands inside another frame).
	mu        sync.Mutex
	wantClose []byte // close frame to write at the next boundary
	closeSent bool   // written; frames from src are observed and dropped
	finished  bool   // copy has returned
	sawClose  bool   // src had sent a close frame before the close was written
}

func (d *direction) run(done chan<- *direction) {
	defer func() { done <- d }()
	d.err = d.copy()
	d.mu.Lock()
	d.finished = true
	d.mu.Unlock()
	if d.err == nil {
		if cw, ok := d.dst.(closeWriter); ok {
			_ = cw.CloseWrite() // the peer may already be gone; the other direction will tell
		} else {
			d.noHalfOpen = true
		}
	}
}

func (d *direction) other() Side {
	if d.srcSide == SideDownstream {
		return SideUpstream
	}
	return SideDownstream
}

func (d *direction) wrote(n int) {
	d.n += int64(n)
	d.count.Add(int64(n))
	d.last.Store(time.Now().UnixNano())
}

// copy moves bytes until EOF (nil) or failure (*SideError).
func (d *direction) copy() error {
	if len(d.pre) > 0 {
		if d.obs != nil {
			d.obs.Feed(d.pre)
		}
		if _, err := d.dst.Write(d.pre); err != nil {
			return &SideError{d.other(), "write", err}
		}
		d.wrote(len(d.pre))
	}
	if d.splice {
		return spliceCopy(d)
	}
	return d.bufferCopy()
}

// goAway asks for frame to be written to dst at the next frame boundary.
func (d *direction) goAway(frame []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finished || d.closeSent || d.obs == nil {
		return
	}
	_, _, d.sawClose = d.obs.Close()
	d.wantClose = frame
	if d.obs.ToBoundary() == 0 {
		d.injectLocked()
	}
}

// closeBadGateway is close code 1014 (Bad Gateway, RFC 6455 registry): a
// proxy's upstream failed.
const closeBadGateway = 1014

// sayGoodbye writes frame to d's destination when that peer should hear
// why its connection ends: d's stream stands at a frame boundary and no
// close frame has gone its way yet. It reports whether it wrote.
func (d *direction) sayGoodbye(frame []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.obs == nil || d.closeSent || d.obs.ToBoundary() != 0 {
		return false
	}
	if _, _, sent := d.obs.Close(); sent {
		return false // the peer already had a close frame from the other side
	}
	d.closeSent = true
	_ = d.dst.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := d.dst.Write(frame)
	return err == nil
}

// injectLocked writes the pending close frame.
func (d *direction) injectLocked() {
	frame := d.wantClose
	d.wantClose = nil
	d.closeSent = true
	_ = d.dst.SetWriteDeadline(time.Now().Add(time.Second))
	// Not counted: the byte counts are what the peers sent (the access
	// log's bytes_received and bytes_sent), not what wsmesh added.
	_, _ = d.dst.Write(frame)
}

// writeChunk writes p to dst and feeds the observer, splitting p at a frame
// boundary to write a pending close frame, and dropping what follows it.
// It reports whether src's close frame has now been seen after our close
// frame went out (the handshake is complete on this side).
func (d *direction) writeChunk(p []byte) (done bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(p) > 0 {
		if d.closeSent {
			d.wrote(len(p)) // received from the peer, though dropped
			if d.obs != nil {
				d.obs.Feed(p)
				_, _, ok := d.obs.Close()
				return ok || d.sawClose, nil
			}
			return false, nil
		}
		k := len(p)
		if d.wantClose != nil {
			tb := d.obs.ToBoundary()
			switch {
			case tb == 0:
				d.injectLocked()
				continue
			case tb < 0:
				k = 1
			case tb < int64(k):
				k = int(tb)
			}
		}
		// Observe before writing: the answer the other peer sends to these
		// bytes must not be observed (and timestamped) before them.
		if d.obs != nil {
			d.obs.Feed(p[:k])
		}
		if _, werr := d.dst.Write(p[:k]); werr != nil {
			return false, &SideError{d.other(), "write", werr}
		}
		d.wrote(k)
		p = p[k:]
	}
	if d.wantClose != nil && d.obs.ToBoundary() == 0 {
		d.injectLocked()
	}
	return false, nil
}

// bufferCopy moves bytes through a buffer, feeding the observer if any.
func (d *direction) bufferCopy() error {
	if sc, ok := d.src.(syscall.Conn); ok && d.bufSize == DefaultBufferSize {
		if rc, err := sc.SyscallConn(); err == nil {
			return d.rawCopy(rc)
		}
	}
	if w, ok := d.src.(readWaiter); ok && d.bufSize == DefaultBufferSize {
		return d.waitCopy(w)
	}
	var buf []byte
	if d.bufSize == DefaultBufferSize {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf = *bp
	} else {
		buf = make([]byte, d.bufSize)
	}
	for {
		n, rerr := d.src.Read(buf)
		if n > 0 {
			done, werr := d.writeChunk(buf[:n])
			if werr != nil {
				return werr
			}
			if done {
				return nil // close handshake finished after going away
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return &SideError{d.srcSide, "read", rerr}
		}
	}
}

// Relay copies bytes between down and up until both directions have ended,
// an error occurs, ctx is done, or the idle timeout passes; it then closes
// both connections and returns what happened. pre's bytes go first.
//
// A clean EOF from one side is passed on with CloseWrite when the other
// connection supports it (*net.TCPConn, TLS, an HTTP/2 stream wrapper...), and
// the other direction keeps flowing; if it does not, the relay ends as if both
// directions had. A read or write error closes both connections at once, and
// a reset read from one TCP peer is passed on to the other TCP peer as a
// reset.
func Relay(ctx context.Context, down, up net.Conn, pre Prefetched, opts Options) Result {
	ctr := opts.Counters
	if ctr == nil {
		ctr = new(Counters)
	}
	ctr.LastActivity.Store(time.Now().UnixNano())
	bufSize := opts.BufferSize
	if bufSize <= 0 {
		bufSize = DefaultBufferSize
	}
	var res Result
	if opts.Observe || opts.DownObserver != nil || opts.UpObserver != nil {
		res.Down, res.Up = opts.DownObserver, opts.UpObserver
		if res.Down == nil {
			res.Down = &wsobserve.Observer{PerMessageDeflate: opts.PerMessageDeflate}
		}
		if res.Up == nil {
			res.Up = &wsobserve.Observer{PerMessageDeflate: opts.PerMessageDeflate}
		}
	}
	splice := res.Down == nil && !opts.DisableSplice && canSplice(down, up)
	res.Spliced = splice

	d2u := &direction{src: down, dst: up, srcSide: SideDownstream, pre: pre.Down, obs: res.Down,
		count: &ctr.DownToUp, last: &ctr.LastActivity, bufSize: bufSize, splice: splice}
	u2d := &direction{src: up, dst: down, srcSide: SideUpstream, pre: pre.Up, obs: res.Up,
		count: &ctr.UpToDown, last: &ctr.LastActivity, bufSize: bufSize, splice: splice}
	done := make(chan *direction, 2)
	go d2u.run(done)
	go u2d.run(done)

	var idle <-chan time.Time
	var rearm func() bool
	if opts.IdleTimeout > 0 {
		t := time.NewTimer(opts.IdleTimeout)
		defer t.Stop()
		idle = t.C
		// The timer fires IdleTimeout after the last re-arm; re-arm it from the
		// last activity unless that too is IdleTimeout ago.
		rearm = func() bool {
			since := time.Since(time.Unix(0, ctr.LastActivity.Load()))
			if since >= opts.IdleTimeout {
				return false
			}
			t.Reset(opts.IdleTimeout - since)
			return true
		}
	}
	// goAway writes close frames to both peers (see Options.GoingAway) and
	// returns the timer that bounds the close handshake; nil when frames are
	// not observed, so the caller closes at once.
	goAway := func(code int, reason string) <-chan time.Time {
		if res.Down == nil || res.Down.Violation() != wsobserve.NoViolation || res.Up.Violation() != wsobserve.NoViolation {
			return nil // not a WebSocket stream we can place frames in
		}
		// To the downstream peer (a client): unmasked; to the upstream
		// peer (a server): masked, as a client's frames must be.
		u2d.goAway(wsobserve.CloseFrame(code, reason, false))
		d2u.goAway(wsobserve.CloseFrame(code, reason, true))
		timeout := opts.GoingAwayTimeout
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		return time.After(timeout)
	}
	awayCode := opts.GoingAwayCode
	if awayCode == 0 {
		awayCode = wsobserve.CloseGoingAway
	}
	onAway := func() <-chan time.Time {
		res.WentAway = true
		reason := opts.GoingAwayReason
		if opts.GoingAwayReasonFn != nil {
			reason = opts.GoingAwayReasonFn()
		}
		return goAway(awayCode, reason)
	}
	// An idle WebSocket is closed like a server going away, with a reason
	// naming the timeout, rather than cut.
	onIdle := func() <-chan time.Time { return goAway(wsobserve.CloseGoingAway, "idle timeout") }
	// When one peer's connection fails, tell the other in WebSocket terms
	// (a close frame at a frame boundary) rather than only cutting TCP, so a
	// browser sees 1014 Bad Gateway (or the server 1001) instead of 1006.
	farewell := func(failed Side) bool {
		if res.Down == nil || res.Down.Violation() != wsobserve.NoViolation || res.Up.Violation() != wsobserve.NoViolation {
			return false // not a WebSocket stream we can speak in
		}
		if failed == SideUpstream {
			return u2d.sayGoodbye(wsobserve.CloseFrame(closeBadGateway, "upstream connection lost", false))
		}
		return d2u.sayGoodbye(wsobserve.CloseFrame(wsobserve.CloseGoingAway, "downstream connection lost", true))
	}
	res.IdleTimedOut = wait(ctx, done, idle, rearm, opts.GoingAway, onAway, onIdle, farewell, down, up, &res)
	for _, d := range []*direction{u2d, d2u} {
		if d.closeSent {
			res.CloseSent++
		}
	}
	down.Close()
	up.Close()
	res.BytesDownToUp, res.BytesUpToDown = d2u.n, u2d.n
	return res
}

// wait collects both directions, closing both connections early on error,
// context end, idle timeout or an EOF that cannot be half-closed. It reports
// whether the idle timeout fired.
func wait(ctx context.Context, done <-chan *direction, idle <-chan time.Time, rearm func() bool,
	away <-chan struct{}, onAway, onIdle func() <-chan time.Time, farewell func(failed Side) bool,
	down, up net.Conn, res *Result) (idleTimedOut bool) {
	var awayTimeout <-chan time.Time
	closed, saidGoodbye := false, false
	closeBoth := func() {
		if !closed {
			closed = true
			down.Close()
			up.Close()
		}
	}
	ctxDone := ctx.Done()
	for pending := 2; pending > 0; {
		select {
		case d := <-done:
			pending--
			switch {
			case d.err == nil:
				if res.FirstEOF == SideNone && !closed {
					res.FirstEOF = d.srcSide
				}
				if d.noHalfOpen {
					closeBoth()
				}
			case !closed:
				// The first real error; errors after we closed are our own doing.
				if res.Err == nil {
					res.Err = d.err
				}
				var se *SideError
				if !saidGoodbye && errors.As(d.err, &se) && farewell(se.Side) {
					// Told the surviving peer why, in WebSocket terms. Close the
					// failed side only and give the survivor a moment to answer
					// (closing with its answer unread would reset it).
					saidGoodbye = true
					res.Lost = se.Side
					if se.Side == SideDownstream {
						down.Close()
					} else {
						up.Close()
					}
					awayTimeout = time.After(2 * time.Second)
					continue
				}
				if errors.As(d.err, &se) && errors.Is(se.Err, syscall.ECONNRESET) && !saidGoodbye {
					// Pass the reset on to the other peer.
					if se.Side == SideDownstream {
						abort(up)
					} else {
						abort(down)
					}
				}
				closeBoth()
			}
		case <-ctxDone:
			ctxDone = nil
			if !closed {
				res.Err = fmt.Errorf("relay: %w", context.Cause(ctx))
				closeBoth()
			}
		case <-idle:
			if !rearm() && !closed {
				idleTimedOut = true
				idle = nil
				if awayTimeout = onIdle(); awayTimeout == nil {
					closeBoth()
				}
			}
		case <-away:
			away = nil
			if !closed && awayTimeout == nil {
				if awayTimeout = onAway(); awayTimeout == nil {
					closeBoth()
				}
			}
		case <-awayTimeout:
			closeBoth()
		}
	}
	return idleTimedOut
}

// abort makes the next close of c send a TCP reset instead of a FIN.
func abort(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
}

// rawCopy is bufferCopy for a socket: it takes a pooled buffer only while a
// read is being tried and gives it back before waiting for the next bytes,
// so an idle relay (most WebSockets, most of the time) holds no buffer.
// The read is the one net.Conn.Read would make; nothing is added per chunk.
func (d *direction) rawCopy(rc syscall.RawConn) error {
	for {
		var bp *[]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			if bp == nil {
				bp = bufPool.Get().(*[]byte)
			}
			for {
				n, rerr = syscall.Read(int(fd), *bp)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				bufPool.Put(bp)
				bp = nil
				return false // park until readable, holding no buffer
			}
			return true
		})
		if err == nil {
			err = rerr
		}
		if err != nil || n <= 0 {
			if bp != nil {
				bufPool.Put(bp)
			}
			if err != nil {
				return &SideError{d.srcSide, "read", err}
			}
			return nil // EOF
		}
		done, werr := d.writeChunk((*bp)[:n])
		bufPool.Put(bp)
		if werr != nil {
			return werr
		}
		if done {
			return nil // close handshake finished after going away
		}
	}
}

// readWaiter is a source that can wait for bytes without a buffer, such as
// an HTTP/2 stream.
type readWaiter interface {
	WaitReadable() error
}

// waitCopy is bufferCopy for a readWaiter: like rawCopy, it holds a pooled
// buffer only while bytes are there to read.
func (d *direction) waitCopy(w readWaiter) error {
	for {
		if err := w.WaitReadable(); err != nil {
			return &SideError{d.srcSide, "read", err}
		}
		bp := bufPool.Get().(*[]byte)
		n, rerr := d.src.Read(*bp)
		if n > 0 {
			done, werr := d.writeChunk((*bp)[:n])
			bufPool.Put(bp)
			if werr != nil {
				return werr
			}
			if done {
				return nil // close handshake finished after going away
			}
		} else {
			bufPool.Put(bp)
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return &SideError{d.srcSide, "read", rerr}
		}
	}
}
