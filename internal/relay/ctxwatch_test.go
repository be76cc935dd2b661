package relay

import (
	"context"
	"errors"
	"testing"
	"time"
)

// watched reports whether the shared watch holds a group for ctx (other
// tests' relays may hold groups of their own).
func watched(ctx context.Context) bool {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	return watch.groups[ctx] != nil
}

// sliceCtx is a context whose dynamic type cannot be a map key.
type sliceCtx struct {
	context.Context
	_ []int
}

// TestSharedContextEndsItsRelays starts relays on one context, ends some
// of them first, then cancels the context: the rest end with its cause,
// and the watch keeps nothing afterwards.
func TestSharedContextEndsItsRelays(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	const n, early = 12, 4
	hs := make([]*harness, n)
	for i := range hs {
		hs[i] = setup(t, modes[0])
		c := ctx
		if i == n-1 {
			c = sliceCtx{Context: ctx} // watched on its own, not in the group
		}
		h := hs[i]
		go func() { h.result <- Relay(c, h.down, h.up, Prefetched{}, Options{}) }()
	}
	for _, h := range hs[:early] {
		h.client.CloseWrite()
		h.server.CloseWrite()
		if r := h.wait(t); r.Err != nil {
			t.Fatalf("relay ended before the cancel: %v", r.Err)
		}
	}
	if !watched(ctx) {
		t.Fatal("the shared context is not watched")
	}
	cause := errors.New("listener closed")
	cancel(cause)
	for i, h := range hs[early:] {
		if r := h.wait(t); !errors.Is(r.Err, cause) {
			t.Fatalf("relay %d: err %v, want the context's cause", early+i, r.Err)
		}
	}
	// A relay started on the ended context ends at once.
	h := setup(t, modes[0])
	go func() { h.result <- Relay(ctx, h.down, h.up, Prefetched{}, Options{}) }()
	if r := h.wait(t); !errors.Is(r.Err, cause) {
		t.Fatalf("late relay: err %v", r.Err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for watched(ctx) {
		if time.Now().After(deadline) {
			t.Fatal("the context is still watched after every relay ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchGroupGoesWithLastRelay checks that a context whose relays all
// ended normally is no longer watched.
func TestWatchGroupGoesWithLastRelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 3 {
		h := setup(t, modes[0])
		go func() { h.result <- Relay(ctx, h.down, h.up, Prefetched{}, Options{}) }()
		h.client.CloseWrite()
		h.server.CloseWrite()
		if r := h.wait(t); r.Err != nil {
			t.Fatal(r.Err)
		}
		if watched(ctx) {
			t.Fatal("the context is still watched after its only relay ended")
		}
	}
}
