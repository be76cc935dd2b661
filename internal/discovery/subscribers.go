package discovery

import (
	"sync"

	"github.com/wsmesh/wsmesh/internal/config"
)

// subscribers is what FileSource and KubeSource share: the channels their
// snapshots go to, and whether the source has started running or closed.
type subscribers struct {
	mu      sync.Mutex
	subs    []chan *config.Snapshot
	closed  bool
	running bool
}

// Subscribe returns a channel receiving each new snapshot (latest wins).
func (s *subscribers) Subscribe() <-chan *config.Snapshot {
	ch := make(chan *config.Snapshot, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(ch)
		return ch
	}
	s.subs = append(s.subs, ch)
	return ch
}

// publish hands snap to every subscriber, unless the source has closed.
func (s *subscribers) publish(snap *config.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		publishLatest(s.subs, snap)
	}
}

// closeSubscribers closes every subscriber channel, once.
func (s *subscribers) closeSubscribers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, ch := range s.subs {
		close(ch)
	}
	s.subs = nil
}

// startRunning marks the source running; false when it already ran or
// has closed.
func (s *subscribers) startRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running || s.closed {
		return false
	}
	s.running = true
	return true
}

// publishLatest hands snap to every subscriber channel (each buffered with
// room for one) without blocking: a snapshot still unread is replaced, so
// a slow subscriber skips to the latest.
func publishLatest(subs []chan *config.Snapshot, snap *config.Snapshot) {
	for _, ch := range subs {
		for {
			select {
			case ch <- snap:
			default:
				select {
				case <-ch:
				default:
				}
				continue
			}
			break
		}
	}
}
