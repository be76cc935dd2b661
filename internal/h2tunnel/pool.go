package h2tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// PoolConfig configures the connecting side of the tunnel. Zero values
// take the defaults of limits.go.
type PoolConfig struct {
	// Dial opens a TCP connection to addr. The default is a net.Dialer
	// that sets TCP keepalive only as WithDialKeepAlive asks (PINGs watch
	// the connection either way, see PingInterval).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// MaxConcurrentStreams is our cap per connection; the peer's SETTINGS
	// may lower it. When every connection to an endpoint is full, another
	// is dialed.
	MaxConcurrentStreams uint32
	// InitialStreamWindow, InitialConnWindow: receive windows.
	InitialStreamWindow, InitialConnWindow uint32
	// MaxFrameSize is the largest frame we accept.
	MaxFrameSize uint32
	// IdleConnTimeout closes a connection without streams (negative: never).
	IdleConnTimeout time.Duration
	// PingInterval: a connection that received nothing for this long is
	// sent a PING; if nothing arrives for another interval it is closed
	// and its streams fail (negative: no keepalive).
	PingInterval time.Duration
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
}

// EndpointStats are the counters of one upstream address.
type EndpointStats struct {
	Conns         int    // open connections
	ActiveStreams int    // streams open (or being opened)
	StreamsOpened uint64 // streams opened over the pool's life
}

// PoolStats are the counters of a Pool.
type PoolStats struct {
	Dialed    uint64 // TCP connections dialed in total
	Endpoints map[string]EndpointStats
}

// Pool keeps HTTP/2 connections to upstream sidecars and opens streams on
// them.
type Pool struct {
	cfg PoolConfig
	log *slog.Logger

	mu     sync.Mutex
	eps    map[string]*endpoint
	closed bool

	dialed atomic.Uint64
	wg     sync.WaitGroup // connection reader goroutines
}

type endpoint struct {
	addr    string
	conns   []*clientConn
	dialing int
	changed chan struct{} // closed when capacity may have appeared
	opened  uint64

	xcKnown, xcSupported bool
}

// notifyLocked wakes RoundTrips waiting for capacity on ep.
func (ep *endpoint) notifyLocked() {
	if ep.changed != nil {
		close(ep.changed)
		ep.changed = nil
	}
}

type dialKeepAliveKey struct{}

// WithDialKeepAlive returns ctx carrying the TCP keepalive of a connection
// that the pool's default Dial opens for a request made with it (a
// DestinationRule's tcp.tcpKeepalive). A connection already open keeps
// its own. The zero value, the default, sends no probes.
func WithDialKeepAlive(ctx context.Context, ka net.KeepAliveConfig) context.Context {
	if ka == (net.KeepAliveConfig{}) {
		return ctx
	}
	return context.WithValue(ctx, dialKeepAliveKey{}, ka)
}

func dialKeepAlive(ctx context.Context) net.KeepAliveConfig {
	ka, _ := ctx.Value(dialKeepAliveKey{}).(net.KeepAliveConfig)
	return ka
}

// NewPool returns a Pool for cfg.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.Dial == nil {
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{KeepAlive: -1, KeepAliveConfig: dialKeepAlive(ctx)}
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	cfg.MaxConcurrentStreams = orDefault(cfg.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	cfg.InitialStreamWindow = min(orDefault(cfg.InitialStreamWindow, DefaultInitialStreamWindow), maxWindow)
	cfg.InitialConnWindow = min(orDefault(cfg.InitialConnWindow, DefaultInitialConnWindow), maxWindow)
	cfg.MaxFrameSize = min(max(orDefault(cfg.MaxFrameSize, DefaultMaxFrameSize), 16384), 1<<24-1)
	cfg.IdleConnTimeout = orDefault(cfg.IdleConnTimeout, DefaultIdleConnTimeout)
	cfg.PingInterval = orDefault(cfg.PingInterval, DefaultPingInterval)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Pool{cfg: cfg, log: log, eps: make(map[string]*endpoint)}
}

// RoundTrip opens a stream to addr, sends the request HEADERS (with
// END_STREAM when req.NoBody) and waits for the response HEADERS, which
// it stores in Stream.Response. Requests the peer provably did not process
// (REFUSED_STREAM, or excluded by GOAWAY) are retried on another
// connection. For an extended CONNECT the peer's first SETTINGS must have
// enabled it, else ErrExtendedConnectUnsupported (nothing is sent).
//
// A request whose peer answers only after reading the body must use
// OpenStream, Write, CloseWrite and ReadResponse instead.
func (p *Pool) RoundTrip(ctx context.Context, addr string, req *Request) (*Stream, error) {
	for attempt := 0; ; attempt++ {
		st, err := p.OpenStream(ctx, addr, req)
		if err == nil {
			if _, err = st.ReadResponse(ctx); err == nil {
				return st, nil
			}
			st.Close()
		}
		if attempt >= 4 || !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// errConnUnusable: the chosen connection got GOAWAY or died before the
// stream could be opened.
var errConnUnusable = errors.New("h2tunnel: connection no longer usable")

func retryable(err error) bool {
	var ge *GoAwayError
	var se *StreamError
	switch {
	case errors.As(err, &ge), errors.Is(err, errConnUnusable):
		return true
	case errors.As(err, &se):
		return se.Remote && se.Code == http2.ErrCodeRefusedStream
	}
	return false
}

// OpenStream opens a stream to addr and queues the request HEADERS
// without waiting for the response: write the body, then ReadResponse.
func (p *Pool) OpenStream(ctx context.Context, addr string, req *Request) (*Stream, error) {
	fields, err := requestFields(req)
	if err != nil {
		return nil, err
	}
	for {
		cc, err := p.getConn(ctx, addr)
		if err != nil {
			return nil, err
		}
		st, err := cc.openStream(ctx, req, fields)
		if errors.Is(err, errConnUnusable) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &Stream{s: st}, nil
	}
}

// PeerSupportsExtendedConnect reports what the last connection to addr
// advertised in SETTINGS_ENABLE_CONNECT_PROTOCOL; known is false until a
// connection's first SETTINGS arrived.
func (p *Pool) PeerSupportsExtendedConnect(addr string) (supported, known bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ep := p.eps[addr]
	if ep == nil {
		return false, false
	}
	return ep.xcSupported, ep.xcKnown
}

// getConn returns a connection to addr with a stream slot reserved.
func (p *Pool) getConn(ctx context.Context, addr string) (*clientConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		ep := p.eps[addr]
		if ep == nil {
			ep = &endpoint{addr: addr}
			p.eps[addr] = ep
		}
		pending := false // a connection still waits for the peer's SETTINGS
		for _, cc := range ep.conns {
			if cc.dead {
				continue
			}
			if cc.reserved < cc.capacity() {
				cc.reserved++
				cc.idleSince = time.Time{}
				ep.opened++
				p.mu.Unlock()
				return cc, nil
			}
			if !cc.settled() {
				pending = true
			}
		}
		// Dial when every connection is full; while one still waits for
		// the peer's SETTINGS (which may raise its limit), wait instead.
		if ep.dialing == 0 && !pending {
			ep.dialing++
			p.mu.Unlock()
			cc, err := p.dial(ctx, ep)
			p.mu.Lock()
			ep.dialing--
			ep.notifyLocked()
			if err != nil {
				p.mu.Unlock()
				return nil, err
			}
			if p.closed {
				p.mu.Unlock()
				cc.goAway(http2.ErrCodeNo, "pool closed")
				return nil, ErrPoolClosed
			}
			ep.conns = append(ep.conns, cc)
			cc.reserved++
			ep.opened++
			p.mu.Unlock()
			return cc, nil
		}
		if ep.changed == nil {
			ep.changed = make(chan struct{})
		}
		ch := ep.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *Pool) dial(ctx context.Context, ep *endpoint) (*clientConn, error) {
	nc, err := p.cfg.Dial(ctx, ep.addr)
	if err != nil {
		return nil, fmt.Errorf("h2tunnel: dial %s: %w", ep.addr, err)
	}
	p.dialed.Add(1)
	cc := &clientConn{p: p, ep: ep}
	cc.conn = newConn(nc, nil, connSettings{
		client:        true,
		streamWin:     p.cfg.InitialStreamWindow,
		connWin:       p.cfg.InitialConnWindow,
		maxFrame:      p.cfg.MaxFrameSize,
		maxHeaderList: 1 << 20,
	}, p.log)
	cc.role = cc
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		nc.Close()
		return nil, ErrPoolClosed
	}
	p.wg.Add(1) // under p.mu: Close cannot be waiting yet
	p.mu.Unlock()
	cc.start()
	go cc.run()
	if p.cfg.PingInterval > 0 || p.cfg.IdleConnTimeout > 0 {
		cc.wg.Add(1)
		go cc.maintain()
	}
	return cc, nil
}

// release gives back cc's stream slot.
func (p *Pool) release(cc *clientConn) {
	p.mu.Lock()
	cc.reserved--
	if cc.reserved == 0 {
		cc.idleSince = time.Now()
	}
	closeNow := cc.dead && cc.reserved == 0
	cc.ep.notifyLocked()
	p.mu.Unlock()
	if closeNow {
		cc.w.closeAfterQueued()
	}
}

// markDead stops new streams on cc.
func (p *Pool) markDead(cc *clientConn) {
	p.mu.Lock()
	cc.dead = true
	cc.ep.notifyLocked()
	p.mu.Unlock()
}

func (p *Pool) remove(cc *clientConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cc.dead = true
	ep := cc.ep
	for i, c := range ep.conns {
		if c == cc {
			ep.conns = append(ep.conns[:i], ep.conns[i+1:]...)
			break
		}
	}
	ep.notifyLocked()
}

func (p *Pool) recordExtendedConnect(ep *endpoint, ok bool) {
	p.mu.Lock()
	ep.xcKnown, ep.xcSupported = true, ok
	p.mu.Unlock()
}

// Close sends GOAWAY on every connection, closes them (open streams fail)
// and waits for their goroutines.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var conns []*clientConn
	for _, ep := range p.eps {
		conns = append(conns, ep.conns...)
		ep.notifyLocked()
	}
	p.mu.Unlock()
	for _, cc := range conns {
		cc.goAway(http2.ErrCodeNo, "pool closing")
	}
	p.wg.Wait()
	return nil
}

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := PoolStats{Dialed: p.dialed.Load(), Endpoints: make(map[string]EndpointStats, len(p.eps))}
	for addr, ep := range p.eps {
		es := EndpointStats{Conns: len(ep.conns), StreamsOpened: ep.opened}
		for _, cc := range ep.conns {
			es.ActiveStreams += cc.reserved
		}
		ps.Endpoints[addr] = es
	}
	return ps
}
