package h2tunnel

import (
	"sync"
	"time"
)

// Defaults. The window and frame sizes were chosen by measurement (see
// BenchmarkStreamThroughput and docs/h2tunnel.md).
const (
	// DefaultMaxConcurrentStreams caps streams per connection (ours; the
	// peer's SETTINGS may lower it).
	DefaultMaxConcurrentStreams = 1000
	// DefaultInitialStreamWindow is the receive window per stream: large
	// enough that one stream is not flow-control bound on a LAN.
	DefaultInitialStreamWindow = 4 << 20
	// DefaultInitialConnWindow is the receive window per connection; it
	// bounds the data buffered for all streams of a connection.
	DefaultInitialConnWindow = 32 << 20
	// DefaultMaxFrameSize is the largest frame we accept (and, as the peer
	// allows, send).
	DefaultMaxFrameSize = 64 << 10
	// DefaultMaxHeaderListSize bounds one decoded header list (RFC 9113
	// §6.5.2 SETTINGS_MAX_HEADER_LIST_SIZE), like Envoy's 60 KiB.
	DefaultMaxHeaderListSize = 64 << 10
	// DefaultIdleConnTimeout closes pooled connections without streams.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultPingInterval is how often an idle-reading connection is probed.
	DefaultPingInterval = 15 * time.Second
	// DefaultDrainTimeout bounds how long a draining server connection
	// waits for open streams.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultMaxResetsPerSecond bounds RST_STREAM frames a client may send
	// (CVE-2023-44487, rapid reset).
	DefaultMaxResetsPerSecond = 400

	// initialPeerMaxStreams is assumed for a peer whose first SETTINGS has
	// not arrived yet (as x/net's transport does).
	initialPeerMaxStreams = 100
	// maxQueuedControlFrames bounds control frames (SETTINGS/PING ACKs,
	// RST_STREAM, WINDOW_UPDATE) queued but not yet written: a peer that
	// floods SETTINGS or PING without reading gets ENHANCE_YOUR_CALM.
	maxQueuedControlFrames = 10000
	// maxContinuationFrames bounds CONTINUATION frames in one header block
	// (CVE-2024-27316 class CONTINUATION floods).
	maxContinuationFrames = 128
	// maxSettingsPerFrame: a SETTINGS frame with more entries is abuse.
	maxSettingsPerFrame = 100
	// writeCloseTimeout bounds the final GOAWAY write before closing.
	writeCloseTimeout = time.Second
	// prefaceTimeout bounds waiting for the client preface.
	prefaceTimeout = 10 * time.Second
	// recentResets is how many stream ids reset by us are remembered so that
	// frames still in flight for them are ignored (RFC 9113 §5.1).
	recentResets = 64
)

// maxHeaderBlock is the largest encoded header block (HEADERS plus
// CONTINUATION payloads) accepted for a header-list limit: HPACK can expand
// at most 8/5 with Huffman, so twice the list size plus a frame is generous.
func maxHeaderBlock(listLimit uint32) int {
	return 2*int(listLimit) + 16<<10
}

// rateLimiter counts events in fixed one-second windows.
type rateLimiter struct {
	mu    sync.Mutex
	limit int
	start time.Time
	n     int
}

// allow records one event and reports whether the rate is still within
// the limit.
func (r *rateLimiter) allow(now time.Time) bool {
	if r.limit <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.start) >= time.Second {
		r.start = now
		r.n = 0
	}
	r.n++
	return r.n <= r.limit
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
