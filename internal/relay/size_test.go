package relay

import (
	"testing"
	"unsafe"
)

// TestRelayStateSize keeps an observed relay's state, both observers
// included, within its allocation size class: a sidecar holds one per idle
// WebSocket.
func TestRelayStateSize(t *testing.T) {
	if got, limit := unsafe.Sizeof(observedRelay{}), uintptr(704); got > limit {
		t.Errorf("observedRelay is %d bytes, over its %d-byte budget", got, limit)
	}
}
