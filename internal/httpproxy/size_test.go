package httpproxy

import (
	"testing"
	"unsafe"

	"github.com/wsmesh/wsmesh/internal/relay"
)

// TestRelayedWebSocketSize keeps the per-WebSocket entry within its
// allocation size class: a sidecar holds one per open WebSocket.
func TestRelayedWebSocketSize(t *testing.T) {
	if got, limit := unsafe.Sizeof(relayedWebSocket{}), uintptr(128); got > limit {
		t.Errorf("relayedWebSocket is %d bytes, over its %d-byte budget", got, limit)
	}
	var _ relay.Ender = (*relayedWebSocket)(nil)
	var _ relay.GoingAwayReasoner = (*relayedWebSocket)(nil) // a drain's reason reaches the close frame
}

// TestHandoffSize: a relay keeps its connection's handoff until it ends.
func TestHandoffSize(t *testing.T) {
	if got, limit := unsafe.Sizeof(handoff{}), uintptr(64); got > limit {
		t.Errorf("handoff is %d bytes, over its %d-byte budget", got, limit)
	}
}
