// Package balancer orders a cluster's endpoints for one request: round
// robin, least request (power of two choices) or random, as Istio's
// DestinationRule loadBalancer.simple names them. The first address is the
// pick; the rest are the fallbacks tried when a connect fails.
package balancer

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Balancer keeps per-cluster round-robin positions and per-endpoint counts
// of requests in flight. It is safe for concurrent use.
type Balancer struct {
	mu     sync.Mutex
	rr     map[string]*atomic.Uint64
	active map[string]*atomic.Int64
}

// New returns a Balancer.
func New() *Balancer {
	return &Balancer{rr: make(map[string]*atomic.Uint64), active: make(map[string]*atomic.Int64)}
}

func (b *Balancer) counter(cluster string) *atomic.Uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.rr[cluster]
	if c == nil {
		c = new(atomic.Uint64)
		b.rr[cluster] = c
	}
	return c
}

func (b *Balancer) activeOf(addr string) *atomic.Int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.active[addr]
	if c == nil {
		c = new(atomic.Int64)
		b.active[addr] = c
	}
	return c
}

// Order returns the endpoints in the order to try them under policy
// ("ROUND_ROBIN" (default), "LEAST_REQUEST", "RANDOM", "PASSTHROUGH"), and a
// function to call when the request ends. The first address counts as one
// more request in flight until done is called.
func (b *Balancer) Order(cluster, policy string, endpoints []string) (ordered []string, done func()) {
	n := len(endpoints)
	if n == 0 {
		return nil, func() {}
	}
	start := 0
	switch policy {
	case "RANDOM":
		start = rand.IntN(n)
	case "LEAST_REQUEST", "LEAST_CONN":
		i, j := rand.IntN(n), rand.IntN(n)
		if b.activeOf(endpoints[j]).Load() < b.activeOf(endpoints[i]).Load() {
			i = j
		}
		start = i
	default:
		start = int(b.counter(cluster).Add(1)-1) % n
	}
	ordered = make([]string, 0, n)
	for k := 0; k < n; k++ {
		ordered = append(ordered, endpoints[(start+k)%n])
	}
	l := &lease{active: b.activeOf(ordered[0])}
	l.active.Add(1)
	return ordered, l.release
}

// lease is one request's count in an endpoint's active requests.
type lease struct {
	active *atomic.Int64
	done   atomic.Bool
}

// release gives the count back; calls after the first do nothing.
func (l *lease) release() {
	if l.done.CompareAndSwap(false, true) {
		l.active.Add(-1)
	}
}

// Active returns the number of requests in flight to addr.
func (b *Balancer) Active(addr string) int64 { return b.activeOf(addr).Load() }
