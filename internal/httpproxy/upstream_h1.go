package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
)

// upConn is one HTTP/1.1 connection to an upstream endpoint.
type upConn struct {
	net.Conn
	br     *bufio.Reader
	addr   string
	idleAt time.Time
}

func (u *upConn) release() {
	if u.br != nil {
		putReader(u.br)
		u.br = nil
	}
}

func (u *upConn) close() {
	u.Conn.Close()
	u.release()
}

// h1Pool keeps idle keep-alive connections per endpoint.
type h1Pool struct {
	mu      sync.Mutex
	idle    map[string][]*upConn
	maxIdle int
	idleTTL time.Duration
	closed  bool
}

func newH1Pool(maxIdle int, ttl time.Duration) *h1Pool {
	return &h1Pool{idle: make(map[string][]*upConn), maxIdle: maxIdle, idleTTL: ttl}
}

func (p *h1Pool) get(addr string) *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[addr]
	for len(list) > 0 {
		u := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		p.idle[addr] = list
		if time.Since(u.idleAt) < p.idleTTL {
			return u
		}
		u.close()
	}
	return nil
}

func (p *h1Pool) put(u *upConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[u.addr]) >= p.maxIdle || u.br.Buffered() > 0 {
		u.close()
		return
	}
	u.idleAt = time.Now()
	p.idle[u.addr] = append(p.idle[u.addr], u)
}

func (p *h1Pool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for k, list := range p.idle {
		for _, u := range list {
			u.close()
		}
		delete(p.idle, k)
	}
}

// connectError describes why no endpoint of a target could be reached.
type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string { return fmt.Sprintf("%s: %v", e.addr, e.err) }
func (e *connectError) Unwrap() error { return e.err }

// dial connects to the first endpoint of t that accepts, in order. A failed
// endpoint does not fail the request while another can take it.
func (p *Proxy) dial(ctx context.Context, t *Target) (*upConn, error) {
	if len(t.Endpoints) == 0 {
		return nil, &LocalReply{Status: 503, Flag: accesslog.NoHealthyUpstream, Details: "no_healthy_upstream", Body: "no healthy upstream"}
	}
	var last error
	for _, addr := range t.Endpoints {
		c, err := p.dialOne(ctx, addr, t)
		if err == nil {
			return &upConn{Conn: c, br: getReader(c), addr: addr}, nil
		}
		last = &connectError{addr: addr, err: err}
		p.cfg.Logger.Debug("upstream connect failed", "cluster", t.Cluster, "endpoint", addr, "cause", err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// dialOne connects to addr within t's connect timeout. Package net sets
// TCP_NODELAY on every TCP connection; keepalive is t's.
func (p *Proxy) dialOne(ctx context.Context, addr string, t *Target) (net.Conn, error) {
	timeout := t.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if p.cfg.Dial != nil {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return p.cfg.Dial(dctx, "tcp", addr)
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: -1, KeepAliveConfig: t.KeepAlive}
	return d.DialContext(ctx, "tcp", addr)
}

// connectFailure turns a dial error into Envoy's 503 UF answer.
func connectFailure(err error) *LocalReply {
	var lr *LocalReply
	if errors.As(err, &lr) {
		return lr
	}
	reason := err.Error()
	var ce *connectError
	if errors.As(err, &ce) {
		reason = ce.err.Error()
		var oe *net.OpError
		if errors.As(ce.err, &oe) && oe.Err != nil {
			reason = oe.Err.Error()
		}
	}
	return &LocalReply{
		Status:  503,
		Flag:    accesslog.UpstreamConnectionFailure,
		Details: "upstream_reset_before_response_started{connection_failure}",
		Body:    "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: " + reason,
	}
}

// noteConnectFailure records which endpoint could not be reached and why,
// as Envoy logs upstream_host and upstream_transport_failure_reason.
func noteConnectFailure(rec *accesslog.Record, err error) {
	var ce *connectError
	if errors.As(err, &ce) {
		rec.UpstreamHost = ce.addr
		rec.UpstreamTransportFailureReason = ce.err.Error()
	}
}
