package httpproxy

import (
	"sort"
	"sync"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/relay"
)

// Tracker lists the open proxied connections of one sidecar for the admin
// port's /connections page.
type Tracker struct {
	mu   sync.Mutex
	next uint64
	open map[uint64]*Tracked
	// allAway, once set, is the going-away reason for every connection,
	// including ones added later (a drain is under way).
	allAway string
}

// Tracked is one open WebSocket. Its description comes from the access-log
// record, whose fields read here are set before the relay starts and not
// changed while it runs.
type Tracked struct {
	ID       uint64
	Reporter string // "source" (outbound side) or "destination" (inbound side), as Istio's reporter label
	rec      *accesslog.Record
	// Counters are the live byte counts of the relay.
	Counters relay.Counters

	mu      sync.Mutex
	relay   relay.Handle // zero until the relay started
	reason  string
	leaving bool // GoAway was called
}

// Cluster is the upstream cluster (the access log's upstream_cluster).
func (t *Tracked) Cluster() string { return t.rec.UpstreamCluster }

// Upstream is the upstream endpoint (the access log's upstream_host).
func (t *Tracked) Upstream() string { return t.rec.UpstreamHost }

// GoAway asks the connection's relay to close both peers with close 1001
// (Going Away) and reason at the next frame boundaries.
func (t *Tracked) GoAway(reason string) {
	t.mu.Lock()
	if t.leaving {
		t.mu.Unlock()
		return
	}
	t.leaving, t.reason = true, reason
	h := t.relay
	t.mu.Unlock()
	h.GoAway()
}

// started records the relay, and sends it away when GoAway came first.
func (t *Tracked) started(h relay.Handle) {
	t.mu.Lock()
	t.relay = h
	leaving := t.leaving
	t.mu.Unlock()
	if leaving {
		h.GoAway()
	}
}

// GoingAwayReason is the reason given to GoAway: the close reason a relay
// going away sends (see relay.GoingAwayReasoner).
func (t *Tracked) GoingAwayReason() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reason
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker { return &Tracker{open: make(map[uint64]*Tracked)} }

// Add registers t; Remove takes it off the list.
func (tr *Tracker) Add(t *Tracked) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	tr.next++
	t.ID = tr.next
	tr.open[t.ID] = t
	all := tr.allAway
	tr.mu.Unlock()
	if all != "" {
		t.GoAway(all)
	}
}

// Remove takes t, registered by Add, off the list.
func (tr *Tracker) Remove(t *Tracked) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	delete(tr.open, t.ID)
	tr.mu.Unlock()
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
		r := t.rec
		out = append(out, ConnectionView{
			ID: t.ID, Side: t.Reporter, Kind: "websocket", Protocol: r.Protocol,
			StartTime: r.StartTime.UTC().Format(time.RFC3339Nano), AgeSeconds: now.Sub(r.StartTime).Seconds(),
			Downstream: r.DownstreamRemoteAddress, Upstream: r.UpstreamHost, Cluster: r.UpstreamCluster, Authority: r.Authority, Path: r.Path,
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

// GoAwayAll closes every open WebSocket, and each one opened from now on,
// with 1001 and reason.
func (tr *Tracker) GoAwayAll(reason string) {
	tr.mu.Lock()
	tr.allAway = reason
	open := make([]*Tracked, 0, len(tr.open))
	for _, t := range tr.open {
		open = append(open, t)
	}
	tr.mu.Unlock()
	for _, t := range open {
		t.GoAway(reason)
	}
}

// Each calls f for every open connection.
func (tr *Tracker) Each(f func(*Tracked)) {
	tr.mu.Lock()
	open := make([]*Tracked, 0, len(tr.open))
	for _, t := range tr.open {
		open = append(open, t)
	}
	tr.mu.Unlock()
	for _, t := range open {
		f(t)
	}
}
