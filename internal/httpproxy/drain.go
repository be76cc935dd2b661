package httpproxy

import "context"

// Drainer tells the proxies of one sidecar to wind down: StopKeepAlive ends
// HTTP/1.1 keep-alive connections after the request in flight (idle ones at
// once) and sends HTTP/2 GOAWAY. (WebSockets are closed with 1001 through
// Tracker.GoAwayAll once their grace period is over.) A nil *Drainer never
// drains.
type Drainer struct {
	httpCtx  context.Context
	stopHTTP context.CancelFunc
}

// NewDrainer returns a Drainer that has not started.
func NewDrainer() *Drainer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Drainer{httpCtx: ctx, stopHTTP: cancel}
}

// StopKeepAlive starts the drain.
func (d *Drainer) StopKeepAlive() { d.stopHTTP() }

// Context is done once StopKeepAlive was called.
func (d *Drainer) Context() context.Context {
	if d == nil {
		return context.Background()
	}
	return d.httpCtx
}

// Draining reports whether StopKeepAlive was called.
func (d *Drainer) Draining() bool { return d != nil && d.httpCtx.Err() != nil }
