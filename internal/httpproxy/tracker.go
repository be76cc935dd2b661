package httpproxy

import (
	"sort"
	"sync"
	"time"

	"github.com/wsmesh/wsmesh/internal/relay"
)

// Tracker lists the open proxied connections of one sidecar for the admin
// port's /connections page.
type Tracker struct {
	mu   sync.Mutex
	next uint64
	open map[uint64]*Tracked
}

// Tracked is one open request or WebSocket.
type Tracked struct {
	ID         uint64
	Reporter   string // "outbound" or "inbound"
	Kind       string // "http" or "websocket"
	Protocol   string
	Start      time.Time
	Downstream string
	Upstream   string
	Cluster    string
	Authority  string
	Path       string
	// Counters are the live byte counts of a relayed connection.
	Counters relay.Counters
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker { return &Tracker{open: make(map[uint64]*Tracked)} }

// Add registers t and returns the function that removes it.
func (tr *Tracker) Add(t *Tracked) (remove func()) {
	if tr == nil {
		return func() {}
	}
	tr.mu.Lock()
	tr.next++
	t.ID = tr.next
	tr.open[t.ID] = t
	tr.mu.Unlock()
	return func() {
		tr.mu.Lock()
		delete(tr.open, t.ID)
		tr.mu.Unlock()
	}
}

// ConnectionView is the JSON form of one open connection.
type ConnectionView struct {
	ID            uint64  `json:"id"`
	Side          string  `json:"side"`
	Kind          string  `json:"kind"`
	Protocol      string  `json:"protocol"`
	StartTime     string  `json:"start_time"`
	AgeSeconds    float64 `json:"age_seconds"`
	Downstream    string  `json:"downstream_remote_address"`
	Upstream      string  `json:"upstream_host"`
	Cluster       string  `json:"upstream_cluster"`
	Authority     string  `json:"authority"`
	Path          string  `json:"path"`
	BytesReceived int64   `json:"bytes_received"`
	BytesSent     int64   `json:"bytes_sent"`
}

// Snapshot returns the open connections, oldest first.
func (tr *Tracker) Snapshot() []ConnectionView {
	now := time.Now()
	tr.mu.Lock()
	out := make([]ConnectionView, 0, len(tr.open))
	for _, t := range tr.open {
		out = append(out, ConnectionView{
			ID: t.ID, Side: t.Reporter, Kind: t.Kind, Protocol: t.Protocol,
			StartTime: t.Start.UTC().Format(time.RFC3339Nano), AgeSeconds: now.Sub(t.Start).Seconds(),
			Downstream: t.Downstream, Upstream: t.Upstream, Cluster: t.Cluster, Authority: t.Authority, Path: t.Path,
			BytesReceived: t.Counters.DownToUp.Load(), BytesSent: t.Counters.UpToDown.Load(),
		})
	}
	tr.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Len is the number of open connections.
func (tr *Tracker) Len() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.open)
}
