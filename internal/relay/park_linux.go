package relay

import (
	"sync"
	"syscall"
)

// poller is the relay's own epoll instance, with one goroutine waiting on
// it for every socket registered. A socket direction is registered in one
// of two ways:
//
//   - parked (parkSocket): one-shot, for bytes or the peer's end, so that a
//     parked direction needs no goroutine of its own. The Go runtime's
//     poller cannot be used for this: it wakes a goroutine that must
//     already exist.
//   - watched (watchSocket): edge-triggered, for the peer's end only
//     (EPOLLRDHUP, and errors, which epoll always reports). A copy loop
//     that has read fewer bytes than it asked for waits for the next ones
//     without first reading again to make sure the socket is drained (see
//     rawRead). The read it skips is the only one that would return the
//     peer's FIN when the FIN came with the last bytes, in the readiness
//     event those bytes consumed: Go's poller does not say EPOLLRDHUP. The
//     watch says it: the poller then interrupts the wait (kick). Bytes
//     never wake it: their wake-ups carry EPOLLIN, which the watch's mask
//     filters out in the kernel, so the watch costs nothing per message.
type poller struct {
	fd   int
	mu   sync.Mutex
	next uint64
	dirs map[uint64]*direction // by token; from first registration to the direction's end
}

var (
	pollerOnce sync.Once
	thePoller  *poller
)

func getPoller() *poller {
	pollerOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return // no parking; directions keep their goroutines
		}
		thePoller = &poller{fd: fd, dirs: make(map[uint64]*direction)}
		go thePoller.loop()
	})
	return thePoller
}

func pollerAvailable() bool { return getPoller() != nil }

func (p *poller) loop() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.fd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			panic("relay: epoll_wait: " + err.Error()) // EBADF/EFAULT/EINVAL: a bug, not a condition
		}
		for i := range events[:n] {
			token := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			p.mu.Lock()
			d := p.dirs[token]
			p.mu.Unlock()
			if d != nil {
				d.polled()
			}
		}
	}
}

// polled handles an event of d's registration: a parked direction is
// woken, a running one kicked. A running direction's event is the watch
// finding its peer's end (or an error), or a park registration firing
// after d was woken another way; the latter may have replaced a watch the
// copy loop counts on, so it is kicked too, and reads until EAGAIN before
// each wait from then on.
func (d *direction) polled() {
	if d.state.Load() == stateParked {
		d.wake()
		return
	}
	d.kick()
}

// pollToken returns d's key in the poller, listing d under it the first
// time; first reports that it was, so the socket is not in the epoll set
// yet.
func (d *direction) pollToken(p *poller) (token uint64, first bool) {
	if d.token == 0 {
		p.mu.Lock()
		p.next++
		d.token = p.next
		p.dirs[d.token] = d
		p.mu.Unlock()
		first = true
	}
	return d.token, first
}

// register sets the events the poller watches d's socket fd for, under
// d's token: ADD the first time (first, from pollToken), MOD after, one
// epoll_ctl call either way, unless a first ADD failed.
func (d *direction) register(p *poller, fd uintptr, token uint64, first bool, events uint32) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	if !first {
		err := syscall.EpollCtl(p.fd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		if err != syscall.ENOENT {
			return err
		}
	}
	return syscall.EpollCtl(p.fd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
}

// parkSocket parks d, whose source is the socket behind rc, until it is
// readable (or hung up). It reports false when the socket could not be
// registered, so the caller goes on reading in its goroutine.
func (d *direction) parkSocket(rc syscall.RawConn) bool {
	p := getPoller()
	if p == nil {
		return false
	}
	token, first := d.pollToken(p) // before d is parked: a wake may run (and end) it at once
	d.setParked()
	var cerr error
	err := rc.Control(func(fd uintptr) {
		// Level-triggered and one-shot: bytes that arrived before the
		// registration fire it at once, and it fires once.
		cerr = d.register(p, fd, token, first, syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLONESHOT)
	})
	if err == nil {
		err = cerr
	}
	if err != nil && d.unpark() {
		return false
	}
	return true // parked, or woken meanwhile and running on a new goroutine
}

// watchSocket registers d's source socket fd so that the poller kicks d
// when the peer's end (or an error) is there, including one already there.
// It reports false when that could not be arranged: the caller must then
// read until EAGAIN before each wait.
func (d *direction) watchSocket(fd uintptr) bool {
	p := getPoller()
	if p == nil {
		return false
	}
	token, first := d.pollToken(p)
	return d.register(p, fd, token, first, syscall.EPOLLRDHUP|epollET) == nil
}

// epollET is syscall.EPOLLET as the uint32 EpollEvent.Events holds.
const epollET = 1 << 31

// forgetToken drops d's entry in the poller, if any, when d has ended. Its
// socket leaves the epoll set when it is closed.
func (d *direction) forgetToken() {
	if d.token == 0 {
		return
	}
	p := getPoller()
	p.mu.Lock()
	delete(p.dirs, d.token)
	p.mu.Unlock()
	d.token = 0
}
