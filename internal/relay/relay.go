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
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsmesh/wsmesh/internal/sockio"
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
	// fresh ones, so a caller can read what an Observer publishes (bytes,
	// last activity, close frame, violation) while the relay runs, and the
	// rest once it ended; setting either implies Observe.
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
	// can show an open relay. They are the relay's own: the Result's byte
	// counts are read from them, so they start at zero and are not shared
	// with another relay.
	Counters *Counters

	// GoingAway, when it is done, ends an observed WebSocket the way a
	// server going away should (RFC 6455 §7.1.2): a close frame with
	// GoingAwayCode (default 1001) and GoingAwayReason is written to each
	// peer at the next frame boundary of the stream flowing to it, later
	// frames towards that peer are dropped, and each side is closed once
	// its own close frame arrives, or when GoingAwayTimeout (default 5s)
	// passes. An unobserved relay is closed at once.
	GoingAway        context.Context
	GoingAwayCode    int
	GoingAwayReason  string
	GoingAwayTimeout time.Duration

	// ParkAfter is how long a direction of a relay with no traffic keeps a
	// goroutine waiting for bytes. After that it is parked: it waits in
	// the relay's own poller (sockets) or on a readiness callback (see
	// ReadNotifier) and holds no goroutine, stack or buffer until bytes
	// arrive, so a sidecar holding many quiet WebSockets costs little
	// memory. 0 means DefaultParkAfter; a negative value never parks.
	ParkAfter time.Duration
}

// DefaultParkAfter is Options.ParkAfter when it is 0: long enough that a
// connection carrying traffic never pays for parking, short enough that
// idle ones stop costing a goroutine within seconds.
const DefaultParkAfter = 2 * time.Second

// Counters are live totals of one relay, safe to read at any time.
type Counters struct {
	DownToUp     atomic.Int64 // bytes read from downstream and written upstream
	UpToDown     atomic.Int64 // bytes read from upstream and written downstream
	LastActivity atomic.Int64 // Unix nanoseconds of the last byte moved (or of the start)
	Parked       atomic.Int32 // directions parked now (see Options.ParkAfter)
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
	// Down and Up observed what the downstream and the upstream peer sent;
	// nil unless observing.
	Down, Up *wsobserve.Observer
	// Err is the first real error (never io.EOF): a *SideError naming the side
	// and operation, or the context's cause when ctx ended the relay.
	Err error
	// CloseSent counts the close frames written to the peers when going
	// away (see WentAway).
	CloseSent int
	// Parked counts how many times a direction was parked (see
	// Options.ParkAfter).
	Parked   int
	FirstEOF Side // the side whose stream ended cleanly first, if any
	// Lost is the side whose connection failed when the other peer was
	// told so with a close frame (1014 "upstream connection lost" to the
	// downstream peer, 1001 "downstream connection lost" to the upstream
	// peer); SideNone otherwise.
	Lost         Side
	IdleTimedOut bool
	// Spliced reports that both directions used splice(2).
	Spliced bool
	// WentAway reports that GoingAway ended the relay.
	WentAway bool
}

// SideError is a read or write failure on one end of the relay.
type SideError struct {
	Side Side
	Op   string // "read" or "write"
	Err  error
}

func (e *SideError) Error() string { return fmt.Sprintf("relay: %s %s: %v", e.Op, e.Side, e.Err) }
func (e *SideError) Unwrap() error { return e.Err }

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
	ch := make(chan Result, 1)
	_ = Start(ctx, down, up, pre, opts, EndFunc(func(r Result) { ch <- r }))
	return <-ch
}

// An Ender is told, once, with the Result, when a relay has ended and both
// its connections are closed (see Start). If it also has a method
// GoingAwayReason() string, a relay going away (Options.GoingAway,
// Handle.GoAway) asks it for the close reason at that time instead of
// using Options.GoingAwayReason.
type Ender interface {
	RelayEnded(Result)
}

// EndFunc is an Ender that is a function.
type EndFunc func(Result)

// RelayEnded calls f(res).
func (f EndFunc) RelayEnded(res Result) { f(res) }

// GoingAwayReasoner is the optional method of an Ender (see Ender).
type GoingAwayReasoner interface {
	GoingAwayReason() string
}

// Start is Relay without waiting: it returns at once and calls
// done.RelayEnded, once, with the Result when the relay has ended and both
// connections are closed.
// No goroutine waits on the relay's behalf: while bytes flow each direction
// has one, and a direction that has been quiet for Options.ParkAfter has
// none (see ParkAfter). done runs on whichever goroutine ended the relay
// and may block; nothing else of the relay waits for it.
//
// The Handle's GoAway does what Options.GoingAway does when it is done, for
// callers that would rather call a method than keep a context per relay.
func Start(ctx context.Context, down, up net.Conn, pre Prefetched, opts Options, done Ender) Handle {
	var r *relayState
	observe := opts.Observe || opts.DownObserver != nil || opts.UpObserver != nil
	if observe {
		// One allocation for the state and both observers: an idle
		// WebSocket costs what its relay holds.
		or := &observedRelay{}
		r = &or.relayState
		r.res.Down, r.res.Up = opts.DownObserver, opts.UpObserver
		if r.res.Down == nil {
			or.obs[0].PerMessageDeflate = opts.PerMessageDeflate
			r.res.Down = &or.obs[0]
		}
		if r.res.Up == nil {
			or.obs[1].PerMessageDeflate = opts.PerMessageDeflate
			r.res.Up = &or.obs[1]
		}
	} else {
		r = &relayState{}
	}
	r.ctx, r.done, r.pending = ctx, done, 2
	r.idleTimeout = opts.IdleTimeout
	r.away = awayOptions{code: int32(opts.GoingAwayCode), reason: opts.GoingAwayReason, timeout: opts.GoingAwayTimeout}
	r.ctr = opts.Counters
	if r.ctr == nil {
		r.ctr = new(Counters)
	}
	r.ctr.LastActivity.Store(time.Now().UnixNano())
	r.bufSize = DefaultBufferSize
	if opts.BufferSize > 0 {
		r.bufSize = int32(min(opts.BufferSize, math.MaxInt32))
	}
	res := &r.res
	splice := res.Down == nil && !opts.DisableSplice && r.bufSize == DefaultBufferSize && canSplice(down, up)
	res.Spliced = splice
	r.d2u = direction{r: r, src: down, srcSide: SideDownstream, pre: pre.Down, splice: splice}
	r.u2d = direction{r: r, src: up, srcSide: SideUpstream, pre: pre.Up, splice: splice}
	r.parkAfter = opts.ParkAfter
	if r.parkAfter == 0 {
		r.parkAfter = DefaultParkAfter
	}
	parks := false
	if r.parkAfter > 0 && !splice {
		for _, d := range []*direction{&r.d2u, &r.u2d} {
			d.parkable = canPark(d.src, int(r.bufSize))
			d.inline = d.parkable && canInline(d.src, d.dst())
			parks = parks || d.parkable
		}
	}

	r.mu.Lock() // the callbacks below wait until everything is set up
	if opts.IdleTimeout > 0 {
		r.idleTimer = time.AfterFunc(opts.IdleTimeout, r.onIdle)
	}
	if ctx.Done() != nil { // a context that can end (not Background)
		watch.add(r)
	}
	if opts.GoingAway != nil {
		r.stopAway = context.AfterFunc(opts.GoingAway, r.onGoingAway)
	}
	if parks {
		sweep.add(r)
	}
	r.mu.Unlock()
	go r.d2u.run()
	go r.u2d.run()
	return Handle{r}
}

// Handle is a relay started by Start.
type Handle struct{ r *relayState }

// GoAway ends the relay as Options.GoingAway does when it is done. It
// returns at once: writing the close frames may wait for a slow peer, and
// the caller (a drain, a configuration change) has every other connection
// to see to. Calling it more than once, or after the relay ended, or on the
// zero Handle, does nothing.
func (h Handle) GoAway() {
	if h.r != nil {
		go h.r.onGoingAway()
	}
}

// relayState is one relay in progress: its two directions and the events
// (a direction ending, ctx, the idle timer, going away) that decide how it
// ends. The events arrive on whichever goroutine caused them.
type relayState struct {
	ctx         context.Context
	ctr         *Counters
	done        Ender
	idleTimeout time.Duration
	parkAfter   time.Duration
	away        awayOptions
	d2u, u2d    direction // d2u.src is downstream, u2d.src upstream

	mu          sync.Mutex
	res         Result
	pending     int32 // directions still running or parked
	bufSize     int32
	closed      bool
	saidGoodbye bool
	awayStarted bool        // a close handshake (going away, idle) is under way
	ctxGrouped  bool        // ctx is watched by watch, not by stopCtx
	awayArmed   atomic.Bool // both directions' close frames are set (see armGoAway)
	idleTimer   *time.Timer
	awayTimer   *time.Timer // bounds the close handshake or the farewell
	stopCtx     func() bool // stops the context callback of a relay not in watch
	stopAway    func() bool

	// inw writes to the socket of the direction that forwards inline (at
	// most one: its source is an HTTP/2 stream, its destination a socket).
	// Made on the first inline forward, dropped when the sweeper counts
	// that direction parked.
	inw atomic.Pointer[sockio.Writer]
}

// observedRelay is a relayState with room for its two observers.
type observedRelay struct {
	relayState
	obs [2]wsobserve.Observer
}

// awayOptions are the going-away settings of Options.
type awayOptions struct {
	reason  string
	timeout time.Duration
	code    int32
}

// down and up are the relay's two connections.
func (r *relayState) down() net.Conn { return r.d2u.src }
func (r *relayState) up() net.Conn   { return r.u2d.src }

// closeBothLocked closes both connections once, and wakes parked
// directions so they see the close and end.
func (r *relayState) closeBothLocked() {
	if r.closed {
		return
	}
	r.closed = true
	r.down().Close()
	r.up().Close()
	r.d2u.wake()
	r.u2d.wake()
}

// closeSideLocked closes one connection, waking its parked reader.
func (r *relayState) closeSideLocked(s Side) {
	if s == SideDownstream {
		r.down().Close()
		r.d2u.wake()
	} else {
		r.up().Close()
		r.u2d.wake()
	}
}

// startAwayTimerLocked arms the timer that closes both sides when a close
// handshake or a farewell takes longer than d.
func (r *relayState) startAwayTimerLocked(d time.Duration) {
	r.awayTimer = time.AfterFunc(d, func() {
		r.mu.Lock()
		r.closeBothLocked()
		r.mu.Unlock()
	})
}

// observable reports whether close frames can be placed in the stream:
// both directions are observed and no protocol violation was seen.
func (r *relayState) observable() bool {
	res := &r.res
	return res.Down != nil && res.Down.Violation() == wsobserve.NoViolation && res.Up.Violation() == wsobserve.NoViolation
}

// goAwayLocked writes close frames to both peers (see Options.GoingAway)
// and arms the timer that bounds the close handshake. It reports false
// when frames are not observed, so the caller closes at once.
func (r *relayState) goAwayLocked(code int, reason string) bool {
	if !r.observable() {
		return false // not a WebSocket stream we can place frames in
	}
	timeout := r.away.timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	// A direction stuck writing to a peer that does not read holds its
	// lock; bound that write so the close frames (and this relay's other
	// events, which wait for r.mu) are not held up for ever.
	deadline := time.Now().Add(timeout)
	_ = r.up().SetWriteDeadline(deadline)
	_ = r.down().SetWriteDeadline(deadline)
	// To the downstream peer (a client): unmasked; to the upstream peer (a
	// server): masked, as a client's frames must be.
	r.armGoAway(wsobserve.CloseFrame(code, reason, false), wsobserve.CloseFrame(code, reason, true))
	r.awayStarted = true
	r.startAwayTimerLocked(timeout)
	return true
}

func (r *relayState) onGoingAway() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.awayStarted || r.pending == 0 {
		return
	}
	r.res.WentAway = true
	code := int(r.away.code)
	if code == 0 {
		code = wsobserve.CloseGoingAway
	}
	reason := r.away.reason
	if gr, ok := r.done.(GoingAwayReasoner); ok {
		reason = gr.GoingAwayReason()
	}
	if !r.goAwayLocked(code, reason) {
		r.closeBothLocked()
	}
}

// onIdle runs when the idle timer fires: an idle WebSocket is closed like a
// server going away, with a reason naming the timeout, rather than cut.
func (r *relayState) onIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.pending == 0 || r.res.IdleTimedOut {
		return
	}
	// The timer fires IdleTimeout after it was armed; re-arm it from the
	// last activity unless that too is IdleTimeout ago.
	since := time.Since(time.Unix(0, r.ctr.LastActivity.Load()))
	if since < r.idleTimeout {
		r.idleTimer.Reset(r.idleTimeout - since)
		return
	}
	r.res.IdleTimedOut = true
	if !r.awayStarted && !r.goAwayLocked(wsobserve.CloseGoingAway, "idle timeout") {
		r.closeBothLocked()
	}
}

func (r *relayState) onCtxDone() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed && r.pending > 0 {
		r.res.Err = fmt.Errorf("relay: %w", context.Cause(r.ctx))
		r.closeBothLocked()
	}
}

// farewellLocked tells the surviving peer, in WebSocket terms (a close
// frame at a frame boundary), that the other peer's connection failed, so
// a browser sees 1014 Bad Gateway (or the server 1001) instead of 1006.
func (r *relayState) farewellLocked(failed Side) bool {
	if !r.observable() {
		return false // not a WebSocket stream we can speak in
	}
	if failed == SideUpstream {
		return r.u2d.sayGoodbye(wsobserve.CloseFrame(closeBadGateway, "upstream connection lost", false))
	}
	return r.d2u.sayGoodbye(wsobserve.CloseFrame(wsobserve.CloseGoingAway, "downstream connection lost", true))
}

// noteEOF records that side's stream ended cleanly, unless another did
// before or the relay is closing.
func (r *relayState) noteEOF(side Side) {
	r.mu.Lock()
	if r.res.FirstEOF == SideNone && !r.closed {
		r.res.FirstEOF = side
	}
	r.mu.Unlock()
}

// directionDone runs when d's copy has returned: it decides whether the
// other direction goes on, and finishes the relay after the second.
func (r *relayState) directionDone(d *direction) {
	r.mu.Lock()
	r.pending--
	switch {
	case d.err == nil: // FirstEOF was noted before the half-close went out
		if d.noHalfOpen {
			r.closeBothLocked()
		}
	case !r.closed:
		// The first real error; errors after we closed are our own doing.
		if r.res.Err == nil {
			r.res.Err = d.err
		}
		var se *SideError
		isSide := errors.As(d.err, &se)
		if !r.saidGoodbye && isSide && r.farewellLocked(se.Side) {
			// Told the surviving peer why. Close the failed side only and
			// give the survivor a moment to answer (closing with its
			// answer unread would reset it).
			r.saidGoodbye = true
			r.awayStarted = true
			r.res.Lost = se.Side
			r.closeSideLocked(se.Side)
			if r.awayTimer != nil {
				r.awayTimer.Stop()
			}
			r.startAwayTimerLocked(2 * time.Second)
			break
		}
		if isSide && errors.Is(se.Err, syscall.ECONNRESET) && !r.saidGoodbye {
			// Pass the reset on to the other peer.
			if se.Side == SideDownstream {
				abort(r.up())
			} else {
				abort(r.down())
			}
		}
		r.closeBothLocked()
	}
	if r.pending > 0 {
		r.mu.Unlock()
		return
	}
	r.finishLocked()
	res := r.res
	r.mu.Unlock()
	r.done.RelayEnded(res)
}

// finishLocked stops the relay's timers and callbacks, closes both
// connections and completes the Result.
func (r *relayState) finishLocked() {
	if r.idleTimer != nil {
		r.idleTimer.Stop()
	}
	if r.awayTimer != nil {
		r.awayTimer.Stop()
	}
	if r.ctxGrouped {
		watch.remove(r)
	} else if r.stopCtx != nil {
		r.stopCtx()
	}
	if r.stopAway != nil {
		r.stopAway()
	}
	sweep.remove(r)
	for _, d := range []*direction{&r.u2d, &r.d2u} {
		if d.closeSent {
			r.res.CloseSent++
		}
		r.res.Parked += int(d.parks.Load())
	}
	r.closed = true
	r.down().Close()
	r.up().Close()
	r.res.BytesDownToUp, r.res.BytesUpToDown = r.ctr.DownToUp.Load(), r.ctr.UpToDown.Load()
}

// abort makes the next close of c send a TCP reset instead of a FIN.
func abort(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
}
