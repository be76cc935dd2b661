package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsmesh/wsmesh/internal/sockio"
	"github.com/wsmesh/wsmesh/internal/wsobserve"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, DefaultBufferSize); return &b }}

type closeWriter interface{ CloseWrite() error }

// The states of a direction.
const (
	stateRunning   int32 = iota // a goroutine copies or waits for bytes, or an inline forward runs
	stateParked                 // no goroutine: the poller or a callback wakes it
	stateListening              // parked, not yet for ParkAfter: an inline source's callback forwards its bytes (see listen)
	stateDone                   // the copy has returned
)

// errParked ends a copy loop whose direction was parked; it never leaves
// the package.
var errParked = errors.New("relay: parked")

// direction is one of the two copy loops. Its fields are ordered so that
// the small ones pack together: a sidecar keeps two per WebSocket.
type direction struct {
	r          *relayState
	src        net.Conn // the other direction's src is this one's destination
	pre        []byte
	err        error // *SideError, or nil on clean EOF
	srcSide    Side
	splice     bool
	started    bool // pre was written; owned by the running goroutine
	noHalfOpen bool // dst cannot CloseWrite, so EOF must end the whole relay

	// Parking (see Options.ParkAfter).
	state  atomic.Int32
	pmu    sync.Mutex   // orders an eviction with the reader's answer to it
	token  uint64       // the poller's key, from the socket's first registration (park or watch) to the end; 0 when none
	wakeFn func()       // d.wake, made once
	parks  atomic.Int32 // times parked
	// waited: the direction has waited for bytes once. Its first wait
	// parks at once (a new WebSocket is often quiet, and a burst of them
	// would otherwise leave the runtime holding a goroutine's worth of
	// memory per connection after they park); later waits park after
	// ParkAfter. Owned by the running goroutine.
	waited   bool
	parkable bool
	evict    bool // the sweeper set a past read deadline to stop the wait
	inline   bool // src is an inlineSource and dst a TCP socket (see listen)

	// Going-away state, guarded by mu (held while writing to dst and feeding
	// the observer, so a close frame never lands inside another frame),
	// except that wantClose is set without it (see armGoAway).
	mu        sync.Mutex
	wantClose atomic.Pointer[[]byte] // close frame to write at the next boundary, once r.awayArmed
	closeSent bool                   // written; frames from src are observed and dropped
	finished  bool                   // copy has returned

	kicked bool // the poller set a past read deadline for the peer's end (see poller); guarded by pmu
}

// dst is where the direction writes: the other direction's source.
func (d *direction) dst() net.Conn {
	if d.srcSide == SideDownstream {
		return d.r.u2d.src
	}
	return d.r.d2u.src
}

// obs is the observer of the frames the direction carries, or nil.
func (d *direction) obs() *wsobserve.Observer {
	if d.srcSide == SideDownstream {
		return d.r.res.Down
	}
	return d.r.res.Up
}

// run copies until the direction ends or parks. A parked (or listening)
// direction is resumed by wake, which forwards inline when it can (see
// forwardInline) and otherwise calls run again on a new goroutine.
func (d *direction) run() {
	d.end(d.copy())
}

// end finishes the direction with the copy's outcome, unless it parked.
func (d *direction) end(err error) {
	if err == errParked {
		return
	}
	d.forgetToken()
	d.err = err
	d.mu.Lock()
	d.finished = true
	d.mu.Unlock()
	d.state.Store(stateDone)
	if d.err == nil {
		// Record who ended first before the peer hears of it: its answer
		// (closing its side) must find this EOF already counted first.
		d.r.noteEOF(d.srcSide)
		if cw, ok := d.dst().(closeWriter); ok {
			_ = cw.CloseWrite() // the peer may already be gone; the other direction will tell
		} else {
			d.noHalfOpen = true
		}
	}
	d.r.directionDone(d)
}

// wake resumes a parked or listening direction: an inline one forwards
// what its source holds on the calling goroutine when it can (see
// forwardInline), any other on a new goroutine. It does nothing when the
// direction is neither, so the poller, a readiness callback and a closing
// relay may all call it.
func (d *direction) wake() {
	switch {
	case d.state.CompareAndSwap(stateListening, stateRunning):
	case d.unpark():
	default:
		return
	}
	if d.inline && d.forwardInline() {
		return
	}
	go d.run()
}

// setParked marks d parked; the caller then registers it for wake-up.
func (d *direction) setParked() {
	d.countParked()
	d.state.Store(stateParked)
}

// countParked counts one more park of d, in the relay's and the process's
// counts (unpark takes the latter two back).
func (d *direction) countParked() {
	d.parks.Add(1)
	sweep.parked.Add(1)
	d.r.ctr.Parked.Add(1)
}

// unpark takes d back from the parked state when registering it failed
// or found it readable. It reports false when a wake got there first, in
// which case the woken goroutine carries on and the caller must stop.
func (d *direction) unpark() bool {
	if d.state.CompareAndSwap(stateParked, stateRunning) {
		sweep.parked.Add(-1)
		d.r.ctr.Parked.Add(-1)
		return true
	}
	return false
}

// evictIfWaiting stops a running direction's wait for bytes (the sweeper
// found the relay idle), so that it parks; a listening direction, which
// has no goroutine to stop, is counted parked at once.
func (d *direction) evictIfWaiting() {
	if d.state.CompareAndSwap(stateListening, stateParked) {
		// No goroutine to stop: count it parked, and let go of the
		// inline writer until bytes come again.
		d.countParked()
		d.r.inw.Store(nil)
		return
	}
	if !d.parkable || d.inline || d.state.Load() != stateRunning {
		return // (an inline direction never waits with a goroutine)
	}
	d.pmu.Lock()
	if !d.evict {
		d.evict = true
		_ = d.src.SetReadDeadline(aLongTimeAgo)
	}
	d.pmu.Unlock()
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// kick stops a copy loop's wait for bytes, which may have been skipped
// the read that would have returned its peer's end (see poller).
func (d *direction) kick() {
	d.pmu.Lock()
	if !d.kicked {
		d.kicked = true
		_ = d.src.SetReadDeadline(aLongTimeAgo)
	}
	d.pmu.Unlock()
}

// deadlineWake reports whether err is a past read deadline set by the
// sweeper's eviction (the direction should park) or the poller's kick (it
// should read again), rather than a real failure, and clears the deadline.
func (d *direction) deadlineWake(err error) (evict, kick bool) {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, false
	}
	d.pmu.Lock()
	defer d.pmu.Unlock()
	evict, kick = d.evict, d.kicked
	if evict || kick {
		d.evict, d.kicked = false, false
		_ = d.src.SetReadDeadline(time.Time{})
	}
	return evict, kick
}

// evicted reports whether err is the sweeper's eviction rather than a real
// failure, and clears the deadline it set.
func (d *direction) evicted(err error) bool {
	evict, _ := d.deadlineWake(err)
	return evict
}

// write writes p to dst: with wr, the copy loop's raw writer, when dst is
// a TCP socket (wr is not nil), else with dst's Write.
func (d *direction) write(p []byte, wr *sockio.Writer) (int, error) {
	if wr != nil {
		return wr.Write(p)
	}
	return d.dst().Write(p)
}

func (d *direction) other() Side {
	if d.srcSide == SideDownstream {
		return SideUpstream
	}
	return SideDownstream
}

// wrote counts n bytes carried at now (Unix nanoseconds).
func (d *direction) wrote(n int, now int64) {
	if d.srcSide == SideDownstream {
		d.r.ctr.DownToUp.Add(int64(n))
	} else {
		d.r.ctr.UpToDown.Add(int64(n))
	}
	d.r.ctr.LastActivity.Store(now)
}

// copy moves bytes until EOF (nil), failure (*SideError) or parking
// (errParked).
func (d *direction) copy() error {
	if !d.started {
		d.started = true
		if len(d.pre) > 0 {
			now := time.Now().UnixNano()
			if o := d.obs(); o != nil {
				o.FeedAt(d.pre, now)
			}
			if _, err := d.dst().Write(d.pre); err != nil {
				return &SideError{d.other(), "write", err}
			}
			d.wrote(len(d.pre), now)
			d.pre = nil
		}
		if d.splice {
			return spliceCopy(d)
		}
	}
	return d.bufferCopy()
}

// armGoAway asks for the close frames down and up to be written at the
// next frame boundary of u2d and d2u respectively, and writes each one now
// if its direction stands at one. r.mu is held.
//
// The frames are set without the directions' locks, which a copy loop
// holds while it writes a chunk to a peer that may read slowly: the loop
// sees the frame before its next write and places it at the next boundary
// itself, instead of writing chunk after chunk ahead of a lock waiter.
// Neither frame counts until both are set (r.awayArmed), so that neither
// peer hears a close frame before the other direction is armed: a peer
// answering at once must not have its answer relayed to the other peer
// ahead of ours.
func (r *relayState) armGoAway(down, up []byte) {
	r.u2d.wantClose.Store(&down)
	r.d2u.wantClose.Store(&up)
	r.awayArmed.Store(true)
	r.d2u.fireGoAway()
	r.u2d.fireGoAway()
}

// closePendingLocked reports whether an armed close frame waits to be
// written to dst.
func (d *direction) closePendingLocked() bool {
	return !d.closeSent && !d.finished && d.wantClose.Load() != nil && d.r.awayArmed.Load()
}

// fireGoAway writes the armed close frame now if the stream stands at a
// frame boundary (else writeChunk does at the next one).
func (d *direction) fireGoAway() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closePendingLocked() && d.obs().ToBoundary() == 0 {
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
	o := d.obs()
	if o == nil || d.closeSent || o.ToBoundary() != 0 {
		return false
	}
	if _, _, sent := o.Close(); sent {
		return false // the peer already had a close frame from the other side
	}
	d.closeSent = true
	dst := d.dst()
	_ = dst.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := dst.Write(frame)
	return err == nil
}

// injectLocked writes the pending close frame.
func (d *direction) injectLocked() {
	frame := *d.wantClose.Swap(nil)
	d.closeSent = true
	dst := d.dst()
	_ = dst.SetWriteDeadline(time.Now().Add(time.Second))
	// Not counted: the byte counts are what the peers sent (the access
	// log's bytes_received and bytes_sent), not what wsmesh added.
	_, _ = dst.Write(frame)
}

// writeChunk writes p to dst and feeds the observer, splitting p at a frame
// boundary to write a pending close frame, and dropping what follows it.
// It reports whether src's close frame has now been seen after our close
// frame went out (the handshake is complete on this side).
func (d *direction) writeChunk(p []byte, wr *sockio.Writer) (done bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.obs()
	now := time.Now().UnixNano() // when the chunk was observed
	for len(p) > 0 {
		if d.closeSent {
			d.wrote(len(p), now) // received from the peer, though dropped
			if o != nil {
				o.FeedAt(p, now)
				_, _, ok := o.Close() // src's close frame, before ours or after
				return ok, nil
			}
			return false, nil
		}
		k := len(p)
		if d.closePendingLocked() {
			tb := o.ToBoundary()
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
		if o != nil {
			o.FeedAt(p[:k], now)
		}
		if _, werr := d.write(p[:k], wr); werr != nil {
			return false, &SideError{d.other(), "write", werr}
		}
		// Read the clock again: the write may have waited for a slow
		// peer, and the other direction may have counted later activity.
		d.wrote(k, time.Now().UnixNano())
		p = p[k:]
	}
	if d.closePendingLocked() && o.ToBoundary() == 0 {
		d.injectLocked()
	}
	return false, nil
}

// bufferCopy moves bytes through a buffer, feeding the observer if any.
func (d *direction) bufferCopy() error {
	wr := sockio.NewWriter(d.dst()) // nil unless dst is a TCP socket
	if sc, ok := d.src.(syscall.Conn); ok && d.r.bufSize == DefaultBufferSize {
		if rc, err := sc.SyscallConn(); err == nil {
			return d.rawCopy(rc, wr)
		}
	}
	if w, ok := d.src.(readWaiter); ok && d.r.bufSize == DefaultBufferSize {
		return d.waitCopy(w, wr)
	}
	var buf []byte
	if d.r.bufSize == DefaultBufferSize {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf = *bp
	} else {
		buf = make([]byte, int(d.r.bufSize))
	}
	for {
		n, rerr := d.src.Read(buf)
		if n > 0 {
			done, werr := d.writeChunk(buf[:n], wr)
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

// rawCopy is bufferCopy for a socket: it takes a pooled buffer only while a
// read is being tried and gives it back before waiting for the next bytes,
// so an idle relay (most WebSockets, most of the time) holds no buffer.
// The read is the one net.Conn.Read would make, as a raw system call
// (sockio.Read); nothing is added per chunk. When dst has a write that
// never waits (a socket, an HTTP/2 stream's TryWrite), the bytes are
// written from inside the read callback, so that after a short read the
// loop can wait for the next bytes without reading again first (see
// rawRead.try); what cannot be written that way is written here, outside
// the callback.
func (d *direction) rawCopy(rc syscall.RawConn, wr *sockio.Writer) error {
	x := &rawRead{d: d}
	if wr != nil {
		x.tw = wr
	} else if tw, ok := d.dst().(tryWriter); ok {
		x.tw = tw
	}
	x.canSkip = x.tw != nil && d.obs() != nil
	x.fn = x.try
	for {
		x.bp, x.n, x.err, x.parkNow, x.skip, x.locked, x.k, x.werr = nil, 0, nil, false, false, false, 0, nil
		err := rc.Read(x.fn)
		if x.parkNow {
			d.waited = true
			if d.parkSocket(rc) {
				return errParked
			}
			continue
		}
		if x.n > 0 { // read, not (all) written in the callback
			bp, n := x.bp, x.n
			if x.locked {
				if err := d.finishWrite(bp, x.k, n, x.werr, wr); err != nil {
					return err
				}
			} else if stop, err := d.deliver(bp, n, wr); stop {
				return err
			}
			continue
		}
		if err == nil {
			err = x.err
		}
		if x.bp != nil {
			bufPool.Put(x.bp)
		}
		if err == nil {
			return nil // EOF
		}
		if evict, kick := d.deadlineWake(err); kick || evict {
			if kick {
				// The peer's end (or an error) is there, and its readiness
				// edge may have been consumed already: read until EAGAIN
				// before every wait from now on.
				x.noSkip = true
			} else if d.parkSocket(rc) {
				return errParked
			}
			continue
		}
		return &SideError{d.srcSide, "read", err}
	}
}

// rawRead is rawCopy's read callback and its state, made once per run so
// that the callback given to RawConn.Read allocates nothing per read.
type rawRead struct {
	d       *direction
	tw      tryWriter             // dst's write that never waits, or nil
	fn      func(fd uintptr) bool // x.try
	bp      *[]byte               // the pooled buffer read into
	n       int                   // bytes in bp, when the callback left them for rawCopy
	err     error                 // the read's error, EAGAIN aside
	k       int                   // of those, written by forwardNow, which kept d.mu (locked)
	werr    error                 // forwardNow's write error
	locked  bool
	parkNow bool // the first wait: park instead
	skip    bool // the last read was short: wait before reading again
	canSkip bool // a WebSocket with a dst that takes bytes without waiting (see try)
	watched bool // the poller watches the socket for its peer's end (until d parks)
	noSkip  bool // it could not be made to, or has kicked: read until EAGAIN before each wait
	shorts  int  // short reads this run, up to watchAfter
}

// watchAfter is how many short reads a run makes, reading until EAGAIN
// each time, before it has its socket watched and starts to skip that
// read. The watch costs two epoll_ctl calls, and at the end a poller wake-up
// and a kick, about what twenty empty reads do: a WebSocket that carries a
// handful of messages (a handshake's worth and a close) is cheaper without.
const watchAfter = 16

// try is called by RawConn.Read when the socket may be readable. It reads
// and forwards until the socket has no bytes (it returns false: wait), or
// the stream ends, fails or must park, or bytes must be written the copy
// loop's way (it returns true). It never blocks: RawConn.Read holds a
// reference on the socket while it runs, and closing the socket waits for
// that reference.
//
// A read that returns fewer bytes than the buffer holds has drained the
// socket (the kernel copies all it has queued), so try waits next instead
// of making the read that would return EAGAIN, one of the three system
// calls (read, write, empty read) a message cost a direction. Bytes that
// arrive later make a new readiness edge, which ends the wait. The peer's
// end may not: a FIN that came with the last bytes left no edge of its
// own, so before the first such wait the socket is watched for it
// (watchSocket), and the poller's kick ends the wait when it comes. After
// a kick every wait is found with a read again: the end's own edge may
// have been consumed by then (RawConn.Read discards a readiness that came
// before it was called). The first wait is also found with a read, since
// it parks instead.
//
// Only WebSocket relays skip (the frames are observed), once their first
// wait has parked. A read also stops short at TCP urgent data, with bytes
// still queued and no edge to come: telnet and FTP send it, WebSocket
// peers do not. Should one, its bytes wait for the peer's next ones, or
// for the sweeper to find the relay quiet for ParkAfter, when the
// direction parks on a level-triggered registration that fires at once.
func (x *rawRead) try(fd uintptr) bool {
	for {
		if x.skip {
			x.skip = false
			return false
		}
		if x.bp == nil {
			x.bp = bufPool.Get().(*[]byte)
		}
		n, err := sockio.Read(fd, *x.bp)
		if err == syscall.EAGAIN {
			bufPool.Put(x.bp)
			x.bp = nil
			if x.d.parkable && !x.d.waited {
				x.parkNow = true
				return true
			}
			return false // wait until readable, holding no buffer
		}
		if err != nil || n <= 0 {
			x.err = err
			return true
		}
		if x.tw == nil {
			x.n = n // dst's Write may wait: rawCopy delivers
			return true
		}
		k, ok, werr := x.d.forwardNow((*x.bp)[:n], x.tw)
		if !ok || werr != nil || k < n {
			x.n, x.k, x.werr, x.locked = n, k, werr, ok
			return true
		}
		short := n < len(*x.bp)
		bufPool.Put(x.bp)
		x.bp = nil
		if short && x.canSkip && x.d.waited && !x.noSkip {
			if !x.watched && x.shorts < watchAfter {
				x.shorts++
			} else if !x.watched {
				x.watched = x.d.watchSocket(fd)
				x.noSkip = !x.watched
			}
			x.skip = x.watched
		}
	}
}

// deliver writes the n bytes read into the pooled buffer bp and returns
// it to the pool. It reports whether the copy must stop, and with what
// (nil: the close handshake finished after going away).
func (d *direction) deliver(bp *[]byte, n int, wr *sockio.Writer) (stop bool, err error) {
	done, werr := d.writeChunk((*bp)[:n], wr)
	bufPool.Put(bp)
	return done || werr != nil, werr
}

// readWaiter is a source that can wait for bytes without a buffer, such as
// an HTTP/2 stream.
type readWaiter interface {
	WaitReadable() error
}

// ReadNotifier is a source that can call back when it becomes readable
// (an HTTP/2 stream), so that a parked direction reading from it needs no
// goroutine.
type ReadNotifier interface {
	// NotifyReadable arranges for f to be called once when Read would
	// not block (bytes, end of stream, an error, or Close), possibly
	// also spuriously. f may run on the source's own goroutine (an
	// HTTP/2 connection's reader, right after it buffered DATA), so it
	// must not block. It reports false, arranging nothing, when Read
	// would not block already.
	NotifyReadable(f func()) bool
}

// waitCopy is bufferCopy for a readWaiter: like rawCopy, it holds a pooled
// buffer only while bytes are there to read.
func (d *direction) waitCopy(w readWaiter, wr *sockio.Writer) error {
	for {
		if d.parkable && !d.waited {
			d.waited = true
			if d.parkNotifier() {
				return errParked
			}
		}
		if d.inline {
			if d.listen() {
				return errParked
			}
		} else if err := w.WaitReadable(); err != nil {
			if d.evicted(err) {
				if d.parkNotifier() {
					return errParked
				}
				continue
			}
			return &SideError{d.srcSide, "read", err}
		}
		bp := bufPool.Get().(*[]byte)
		n, rerr := d.src.Read(*bp)
		if n > 0 {
			if stop, err := d.deliver(bp, n, wr); stop {
				return err
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

// parkNotifier parks a direction reading from a ReadNotifier. It reports
// false when the source is readable already, so the caller goes on.
func (d *direction) parkNotifier() bool {
	n, ok := d.src.(ReadNotifier)
	if !ok {
		return false
	}
	d.setParked()
	return d.notify(n)
}

// notify registers d's wake-up as n's readiness callback, d being marked
// parked or listening already. It reports false when n is readable
// already and d is running again: the caller reads.
func (d *direction) notify(n ReadNotifier) bool {
	if d.wakeFn == nil {
		d.wakeFn = d.wake
	}
	if n.NotifyReadable(d.wakeFn) {
		return true
	}
	// Readable already. Take the direction back, unless a wake (a closing
	// relay) took it first and carries on.
	return !d.state.CompareAndSwap(stateListening, stateRunning) && !d.unpark()
}
