package relay

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/wsmesh/wsmesh/internal/sockio"
)

// inlineForwards counts the reads forwarded on a source's goroutine.
var inlineForwards atomic.Int64

// InlineForwards is the number of reads of an HTTP/2 stream that relays in
// this process have forwarded on the stream's own goroutine (see listen).
func InlineForwards() int64 { return inlineForwards.Load() }

// inlineSource is a ReadNotifier whose callback, when bytes arrive, runs on
// the goroutine that received them and may take them without waiting: an
// HTTP/2 stream, whose connection reader buffers DATA and then calls back.
type inlineSource interface {
	ReadNotifier
	// ReadNoWait is Read without waiting: (0, nil) when nothing is there.
	ReadNoWait(p []byte) (int, error)
}

// canInline reports whether a direction from src to dst can forward on its
// source's goroutine: src is an inlineSource and dst a TCP socket (or an
// intercepted connection wrapping one), whose writes can be tried without
// waiting.
func canInline(src, dst net.Conn) bool {
	_, in := src.(inlineSource)
	return in && sockio.TCPConnOf(dst) != nil
}

// maxInlineRounds bounds how many reads an inline forward makes before it
// hands the direction to a goroutine: the source's reader serves other
// streams too.
const maxInlineRounds = 8

// listen waits for bytes from an inline source with no goroutine: the
// source's callback (wake) forwards what arrives on the source's own
// goroutine, so a message crossing the relay needs no hand-off between
// goroutines. A listening direction is not counted parked until the relay
// has been idle for ParkAfter (see evictIfWaiting). listen reports false
// when the source is readable already and the caller must read.
func (d *direction) listen() bool {
	d.state.Store(stateListening)
	return d.notify(d.src.(ReadNotifier))
}

// forwardInline passes on what the inline source holds, on the calling
// goroutine (the source's reader), without waiting: it reads the bytes,
// observes them and writes them to dst as far as the socket takes them,
// then listens again. The direction is running (wake took it). When the
// bytes need the copy loop (a close handshake under way, the observer's
// lock taken) or the socket takes only part of them, a new goroutine
// delivers them and carries on as the copy loop. A wake with nothing to
// read (an empty DATA frame) listens again. It reports false when the
// source has ended or failed, having read nothing in that round: the
// caller starts the copy loop, which sees why.
func (d *direction) forwardInline() bool {
	src := d.src.(inlineSource)
	for range maxInlineRounds {
		bp := bufPool.Get().(*[]byte)
		n, err := src.ReadNoWait(*bp)
		if n == 0 {
			bufPool.Put(bp)
			if err != nil {
				return false // the copy loop sees why
			}
			// A wake with nothing to read (an empty DATA frame, a stale
			// callback): listen again here rather than on a new goroutine.
			if d.listen() {
				return true
			}
			continue
		}
		w := d.r.inw.Load()
		if w == nil {
			w = sockio.NewWriter(d.dst())
			d.r.inw.Store(w)
		}
		k, ok, err := d.forwardNow((*bp)[:n], w)
		if !ok {
			go d.resumeDeliver(bp, n)
			return true
		}
		if err != nil || k < n {
			go d.resumeWrite(bp, k, n, err) // d.mu goes along, still locked
			return true
		}
		bufPool.Put(bp)
		inlineForwards.Add(1)
		if d.listen() {
			return true
		}
	}
	go d.run()
	return true
}

// tryWriter is a destination's write that never waits: it takes what it
// can of p at once (a socket's sockio.Writer), or all of p or nothing (an
// HTTP/2 stream, whose TryWrite hands small writes to its connection's
// writer).
type tryWriter interface {
	TryWrite(p []byte) (int, error)
}

// forwardNow writes p to dst with w, feeding the observer, without
// waiting, when nothing stands in the way. It reports ok false, having
// done nothing, when the direction's lock is taken or a close handshake is
// under way: the caller delivers p the copy loop's way. Otherwise k bytes
// went out; when that is short of len(p) (a full socket buffer) or err is
// set, d.mu is still held, for the caller to finish under it (see
// finishWrite): the observer has seen all of p, so no close frame may land
// among its bytes.
func (d *direction) forwardNow(p []byte, w tryWriter) (k int, ok bool, err error) {
	if !d.mu.TryLock() {
		return 0, false, nil
	}
	if d.closeSent || d.wantClose.Load() != nil {
		d.mu.Unlock()
		return 0, false, nil
	}
	now := time.Now().UnixNano()
	if o := d.obs(); o != nil {
		o.FeedAt(p, now)
	}
	k, err = w.TryWrite(p)
	if k > 0 {
		d.wrote(k, now)
	}
	if err != nil || k < len(p) {
		return k, true, err // d.mu stays locked
	}
	d.mu.Unlock()
	return k, true, nil
}

// finishWrite writes (*bp)[k:n] after a forwardNow that wrote only k bytes
// (or failed with werr), with d.mu still held, which it releases; it gives
// bp back. Unlike writeChunk it places no close frame at the boundary it
// ends at: a going away armed meanwhile has its fireGoAway waiting for
// d.mu, and that writes it.
func (d *direction) finishWrite(bp *[]byte, k, n int, werr error, wr *sockio.Writer) error {
	if werr == nil {
		var m int
		m, werr = d.write((*bp)[k:n], wr)
		d.wrote(m, time.Now().UnixNano())
	}
	d.mu.Unlock()
	bufPool.Put(bp)
	if werr != nil {
		return &SideError{d.other(), "write", werr}
	}
	return nil
}

// resumeWrite finishes an inline forward whose bytes dst did not take
// whole (see forwardNow), and then carries on as the copy loop.
func (d *direction) resumeWrite(bp *[]byte, k, n int, werr error) {
	if err := d.finishWrite(bp, k, n, werr, nil); err != nil {
		d.end(err)
		return
	}
	d.end(d.copy())
}

// resumeDeliver delivers the n bytes an inline forward read but could not
// write itself, the copy loop's way, and then carries on as the copy loop.
func (d *direction) resumeDeliver(bp *[]byte, n int) {
	if stop, err := d.deliver(bp, n, nil); stop {
		d.end(err)
		return
	}
	d.end(d.copy())
}
