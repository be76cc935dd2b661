package h2tunnel

import (
	"testing"
	"unsafe"
)

// TestStreamSize keeps the per-stream state within its allocation size
// class: a sidecar holds one stream per idle WebSocket it tunnels.
func TestStreamSize(t *testing.T) {
	if got, limit := unsafe.Sizeof(stream{}), uintptr(288); got > limit {
		t.Errorf("stream is %d bytes, over its %d-byte budget", got, limit)
	}
}
