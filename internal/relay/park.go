package relay

import (
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sweepInterval is how often the sweeper looks for relays to park.
const sweepInterval = 500 * time.Millisecond

// sweeper finds relays that have been idle for their ParkAfter and evicts
// their waiting directions, which then park (see Options.ParkAfter). One
// goroutine serves the whole process; it runs while some relay can park.
type sweeper struct {
	mu      sync.Mutex
	relays  map[*relayState]struct{}
	running bool
	parked  atomic.Int64 // directions parked now

	// Touched by loop only (see maybeTrim).
	lastParked, parkedAtTrim int64
	trimmedAt                time.Time
}

// After a wave of connections has gone quiet, the heap their setup used
// (handshake buffers, parsed heads, per-request state) is free, but Go's
// runtime hands free pages back to the system only slowly. The sweeper
// gives them back at once (debug.FreeOSMemory) when at least trimMin
// directions are parked, their number has stopped growing, it is a
// quarter above what it was at the last trim, and trimEvery has passed.
// A sidecar holding ten thousand idle WebSockets keeps about a third less
// resident memory this way.
const (
	trimMin   = 1000
	trimEvery = 10 * time.Second
)

// maybeTrim runs once per sweep.
func (s *sweeper) maybeTrim() {
	n := s.parked.Load()
	if n < s.parkedAtTrim {
		s.parkedAtTrim = n // connections closed: a new wave counts from here
	}
	settled := n == s.lastParked
	s.lastParked = n
	if !settled || n < trimMin || n < s.parkedAtTrim+s.parkedAtTrim/4 || time.Since(s.trimmedAt) < trimEvery {
		return
	}
	s.parkedAtTrim, s.trimmedAt = n, time.Now()
	freeOSMemory()
}

var freeOSMemory = debug.FreeOSMemory

var sweep sweeper

func (s *sweeper) add(r *relayState) {
	s.mu.Lock()
	if s.relays == nil {
		s.relays = make(map[*relayState]struct{})
	}
	s.relays[r] = struct{}{}
	if !s.running {
		s.running = true
		go s.loop()
	}
	s.mu.Unlock()
}

func (s *sweeper) remove(r *relayState) {
	s.mu.Lock()
	delete(s.relays, r)
	s.mu.Unlock()
}

func (s *sweeper) loop() {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for range t.C {
		now := time.Now().UnixNano()
		s.mu.Lock()
		if len(s.relays) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		for r := range s.relays {
			if time.Duration(now-r.ctr.LastActivity.Load()) < r.parkAfter {
				continue
			}
			r.d2u.evictIfWaiting()
			r.u2d.evictIfWaiting()
		}
		s.mu.Unlock()
		s.maybeTrim()
	}
}

// Parked is the number of relay directions parked in this process now
// (a direction listening for an HTTP/2 stream's bytes, which also holds no
// goroutine, counts once its relay has been idle for ParkAfter):
// waiting for bytes without a goroutine.
func Parked() int64 { return sweep.parked.Load() }

// canPark reports whether a direction reading src can park: a socket the
// poller can watch, or a ReadNotifier that waits without a buffer.
func canPark(src net.Conn, bufSize int) bool {
	if bufSize != DefaultBufferSize {
		return false
	}
	if _, ok := src.(syscall.Conn); ok {
		return pollerAvailable()
	}
	_, w := src.(readWaiter)
	_, n := src.(ReadNotifier)
	return w && n
}
