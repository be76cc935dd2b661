package httpproxy

import (
	"context"
	"sync"
)

// Drainer tells the proxies of one sidecar to wind down in two steps:
// StopKeepAlive ends HTTP/1.1 keep-alive connections after the request in
// flight (idle ones at once) and sends HTTP/2 GOAWAY; GoAwayWebSockets then
// closes every observed WebSocket with close 1001 (Going Away) to both peers
// at a frame boundary. A nil *Drainer never drains.
type Drainer struct {
	httpCtx  context.Context
	stopHTTP context.CancelFunc
	ws       chan struct{}
	wsOnce   sync.Once
}

// NewDrainer returns a Drainer that has not started.
func NewDrainer() *Drainer {
	ctx, cancel := context.WithCancel(context.Background())
	return &Drainer{httpCtx: ctx, stopHTTP: cancel, ws: make(chan struct{})}
}

// StopKeepAlive starts the first step.
func (d *Drainer) StopKeepAlive() { d.stopHTTP() }

// GoAwayWebSockets starts the second step.
func (d *Drainer) GoAwayWebSockets() { d.wsOnce.Do(func() { close(d.ws) }) }

// Context is done once StopKeepAlive was called.
func (d *Drainer) Context() context.Context {
	if d == nil {
		return context.Background()
	}
	return d.httpCtx
}

// Draining reports whether StopKeepAlive was called.
func (d *Drainer) Draining() bool { return d != nil && d.httpCtx.Err() != nil }

func (d *Drainer) webSockets() <-chan struct{} {
	if d == nil {
		return nil
	}
	return d.ws
}
