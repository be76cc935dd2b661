package relay

import (
	"context"
	"testing"
	"time"
)

func pollerEntries() int {
	p := getPoller()
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.dirs)
}

// TestClosedParkedRelayLeavesPollerClean checks that a relay ended while
// both its directions were parked in the poller leaves no entry there (the
// sockets leave the epoll set without an event when they close, so the
// poller would never drop them itself).
func TestClosedParkedRelayLeavesPollerClean(t *testing.T) {
	before := pollerEntries()
	for _, end := range []string{"context", "client reset"} {
		h := setup(t, mode{})
		ctr := new(Counters)
		ctx, cancel := context.WithCancel(context.Background())
		h.start(ctx, Prefetched{}, Options{Observe: true, Counters: ctr, ParkAfter: 50 * time.Millisecond})
		waitParked(t, ctr, 2)
		if got := pollerEntries(); got != before+2 {
			t.Fatalf("%s: %d poller entries with both directions parked, want %d", end, got, before+2)
		}
		if end == "context" {
			cancel()
		} else {
			_ = h.client.SetLinger(0)
			h.client.Close()
		}
		h.wait(t)
		cancel()
		if got := pollerEntries(); got != before {
			t.Fatalf("%s: %d poller entries after the relay ended, want %d", end, got, before)
		}
	}
}
