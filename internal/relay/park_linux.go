package relay

import (
	"sync"
	"syscall"
)

// poller is the relay's own epoll instance: parked socket directions are
// registered with it (one-shot), and one goroutine waits on it for them
// all, so a parked direction needs no goroutine of its own. The Go
// runtime's poller cannot be used for this: it wakes a goroutine that
// must already exist.
type poller struct {
	fd      int
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]*direction
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
		thePoller = &poller{fd: fd, waiting: make(map[uint64]*direction)}
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
			d := p.waiting[token]
			delete(p.waiting, token)
			p.mu.Unlock()
			if d != nil {
				d.wake()
			}
		}
	}
}

// parkSocket parks d, whose source is the socket behind rc, until it is
// readable (or hung up). It reports false when the socket could not be
// registered, so the caller goes on reading in its goroutine.
func (d *direction) parkSocket(rc syscall.RawConn) bool {
	p := getPoller()
	if p == nil {
		return false
	}
	p.mu.Lock()
	p.next++
	token := p.next
	p.waiting[token] = d
	p.mu.Unlock()
	d.token = token // dropped by whoever resumes d (see forgetToken)
	d.setParked()
	var cerr error
	err := rc.Control(func(fd uintptr) {
		// Level-triggered and one-shot: bytes that arrived before the
		// registration fire it at once, and it fires once.
		ev := syscall.EpollEvent{
			Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
			Fd:     int32(uint32(token)),
			Pad:    int32(uint32(token >> 32)),
		}
		cerr = syscall.EpollCtl(p.fd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		if cerr == syscall.ENOENT { // first time parked: not registered yet
			cerr = syscall.EpollCtl(p.fd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		if d.unpark() {
			d.forgetToken()
			return false
		}
		return true // woken meanwhile: the new goroutine forgets the token
	}
	return true
}

// forgetToken drops d's entry in the poller, if any, once d runs again:
// the poller deletes it when it fires, but a direction woken by its relay
// closing (its socket then leaves the epoll set without an event) would
// otherwise stay listed, and keep its relay alive, for ever.
func (d *direction) forgetToken() {
	if d.token == 0 {
		return
	}
	p := getPoller()
	p.mu.Lock()
	delete(p.waiting, d.token)
	p.mu.Unlock()
	d.token = 0
}
