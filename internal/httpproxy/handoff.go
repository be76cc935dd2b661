package httpproxy

import "io"

// handoff is what the goroutine serving a downstream connection (or an
// HTTP/2 stream) must do once it is done with it: close it, release its
// connection slot, end the stream. A WebSocket relay takes it over, so that
// the goroutine returns while the relay goes on without one (see
// relay.Start), and does it when the relay ends.
type handoff struct {
	conn    io.Closer // closed last, when set
	limiter *Limiter  // released before conn is closed, when set
	early   func()    // run by take, when set: what a relay does not need kept
	release func()    // run first by runAll, when set: what detach returned
	// detach, when set, is called by take to keep the stream open past the
	// serving goroutine's return; what it returns is run at the end.
	detach interface{ Detach() (release func()) }
	taken  bool
}

// run does the work, unless a relay took it.
func (h *handoff) run() {
	if !h.taken {
		if h.early != nil {
			h.early()
		}
		h.runAll()
	}
}

// unlessTaken calls f (if not nil) unless a relay took the connection: for
// per-exchange work (Target.Done) that a WebSocket relay does itself when
// it ends.
func (h *handoff) unlessTaken(f func()) {
	if f != nil && !h.taken {
		f()
	}
}

// take hands the remaining work to the caller, which must call runAll once,
// when it is done with the connection.
func (h *handoff) take() {
	h.taken = true
	if h.early != nil {
		h.early()
		h.early = nil
	}
	if h.detach != nil {
		h.release = h.detach.Detach()
		h.detach = nil
	}
}

// runAll ends the detached stream, then releases the limiter and closes
// conn.
func (h *handoff) runAll() {
	if h.release != nil {
		h.release()
		h.release = nil
	}
	if h.limiter != nil {
		h.limiter.Release()
		h.limiter = nil
	}
	if h.conn != nil {
		h.conn.Close()
	}
}
