package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
)

// ServeH1 serves HTTP/1.1 requests arriving on downstream connection c until
// it closes, the idle timeout passes or ctx ends. br must read from c; bytes
// it already buffered (for example by protocol detection) are the start of
// the first request. ServeH1 closes c before returning, except when c became
// a WebSocket: then ServeH1 returns at once and the relay (which needs no
// goroutine of its own while the WebSocket is idle) closes c when it ends.
func (p *Proxy) ServeH1(ctx context.Context, c net.Conn, br *bufio.Reader) {
	ho := &handoff{conn: c}
	defer ho.run()
	// ctx ending stops a read in progress. A relay that takes c over
	// watches ctx itself: the callback is stopped then, and if it already
	// ran, the deadline it set is cleared, so the relay's first read ends
	// with ctx's cause rather than a timeout.
	var cut struct {
		sync.Mutex
		handed bool
	}
	stop := context.AfterFunc(ctx, func() {
		cut.Lock()
		if !cut.handed {
			_ = c.SetReadDeadline(time.Now())
		}
		cut.Unlock()
	})
	ho.early = func() {
		if !stop() {
			cut.Lock()
			cut.handed = true
			cut.Unlock()
			_ = c.SetReadDeadline(time.Time{})
		}
	}
	if !p.cfg.Limiter.Acquire() {
		p.rejectOverload(c, br)
		return
	}
	ho.limiter = p.cfg.Limiter
	// A new connection must send its first request within the header-read
	// timeout: a silent one does not hold a connection slot for the whole
	// keep-alive idle timeout.
	wait := p.cfg.HeaderReadTimeout
	for ctx.Err() == nil && !p.cfg.Drainer.Draining() {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		wait = p.cfg.IdleTimeout
		// A drain closes an idle keep-alive connection at once. (No wait
		// when the request's first bytes are in already, as they are on a
		// new connection after protocol detection.)
		var err error
		if br.Buffered() == 0 {
			stopIdle := context.AfterFunc(p.cfg.Drainer.Context(), func() { _ = c.SetReadDeadline(time.Now()) })
			_, err = br.Peek(1)
			if !stopIdle() && err == nil {
				_ = c.SetReadDeadline(time.Time{}) // drained as the request arrived: serve it, then close
			}
		}
		if err != nil {
			return // idle, closed by the peer, or shutting down between requests
		}
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(p.cfg.HeaderReadTimeout))
		req, err := h1.ReadRequest(br, p.cfg.Limits)
		if err != nil {
			p.rejectHead(c, err, start)
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		if !p.exchangeH1(ctx, c, br, req, start, ho) {
			return
		}
	}
}

// rejectHead answers a request head that could not be read.
func (p *Proxy) rejectHead(c net.Conn, err error, start time.Time) {
	rec := p.newRecord(c, start)
	rec.Protocol = "HTTP/1.1"
	var he *h1.Error
	var lr *LocalReply
	switch {
	case errors.As(err, &he):
		lr = &LocalReply{Status: he.Status, Flag: accesslog.DownstreamProtocolError, Details: he.Details, Body: he.Err.Error()}
	case errors.Is(err, os.ErrDeadlineExceeded):
		lr = &LocalReply{Status: 408, Flag: accesslog.DownstreamProtocolError, Details: "request_header_timeout", Body: "request header timeout"}
	default:
		// The connection broke inside the head: nobody to answer.
		rec.ResponseFlags = accesslog.DownstreamConnectionTermination.String()
		rec.ResponseCodeDetails = "downstream_remote_disconnect"
		rec.ConnectionTerminationDetails = err.Error()
		p.finish(rec, nil)
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	p.writeLocalReply(c, lr, rec, true)
	p.cfg.Logger.Debug("rejected request head", "downstream", c.RemoteAddr().String(), "status", lr.Status, "cause", err)
	p.finish(rec, nil)
}

// exchangeH1 handles one request whose head has been read. It reports
// whether the downstream connection may carry another request.
func (p *Proxy) exchangeH1(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request, start time.Time, ho *handoff) bool {
	rec := p.newRecord(c, start)
	rec.Method = req.Method
	rec.Path = req.Target
	rec.Protocol = req.Proto
	rec.Authority = req.Headers.Get("Host")
	rec.UserAgent = req.Headers.Get("User-Agent")
	prepareForwarding(req, rec)

	keepAlive := wantsKeepAlive(req)
	target, err := p.cfg.Router.Route(req, c.LocalAddr())
	if err != nil {
		lr := asLocalReply(err)
		body, berr := h1.RequestBody(req)
		if berr == nil && body.Kind != h1.BodyNone {
			keepAlive = false // the body is not read
		}
		p.writeLocalReply(c, lr, rec, !keepAlive)
		p.finish(rec, nil)
		return keepAlive
	}
	defer ho.unlessTaken(target.Done)
	rec.RouteName = target.RouteName
	rec.UpstreamCluster = target.Cluster

	if h1.IsWebSocketUpgrade(req) {
		return p.upgradeH1(ctx, c, br, req, target, rec, ho)
	}
	if target.H2 && p.cfg.H2 != nil {
		return p.forwardPlainOverH2(ctx, c, br, req, target, rec, keepAlive)
	}
	return p.forwardH1(ctx, c, br, req, target, rec, keepAlive)
}

func (p *Proxy) newRecord(c net.Conn, start time.Time) *accesslog.Record {
	return &accesslog.Record{
		StartTime:               start,
		DownstreamLocalAddress:  sharedAddrString(c.LocalAddr()),
		DownstreamRemoteAddress: addrString(c.RemoteAddr()),
		UpstreamServiceTime:     -1,
	}
}

func addrString(a net.Addr) string {
	if ap, ok := tcpAddrPort(a); ok {
		return ap.String()
	}
	if a == nil {
		return ""
	}
	return a.String()
}

// tcpAddrPort returns a TCP address as a netip.AddrPort, an IPv4 address
// unmapped as TCPAddr.String writes it.
func tcpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// sharedAddrString is addrString for an address many connections share (a
// listener's, or that of the HTTP/2 connection that carries many streams):
// it returns the same string for the same address instead of a new one per
// connection, which an idle WebSocket's access-log record would keep.
func sharedAddrString(a net.Addr) string {
	ap, ok := tcpAddrPort(a)
	if !ok {
		return addrString(a)
	}
	addrStrings.mu.Lock()
	defer addrStrings.mu.Unlock()
	if s, ok := addrStrings.m[ap]; ok {
		return s
	}
	if addrStrings.m == nil || len(addrStrings.m) >= maxSharedAddrs {
		addrStrings.m = make(map[netip.AddrPort]string) // bounded: start over
	}
	s := ap.String()
	addrStrings.m[ap] = s
	return s
}

// addrStrings holds sharedAddrString's strings.
var addrStrings struct {
	mu sync.Mutex
	m  map[netip.AddrPort]string
}

// maxSharedAddrs bounds addrStrings; addresses shared by connections are
// few (listeners, peer sidecars' HTTP/2 connections).
const maxSharedAddrs = 1024

// prepareForwarding adds X-Request-Id (when absent), X-Forwarded-For (from
// the record's downstream_remote_address) and X-Forwarded-Proto, and copies
// them into the record.
func prepareForwarding(req *h1.Request, rec *accesslog.Record) {
	id := req.Headers.Get("X-Request-Id")
	if id == "" {
		id = newRequestID()
		req.Headers.Add("X-Request-Id", id)
	}
	rec.RequestID = id
	if host, _, err := net.SplitHostPort(rec.DownstreamRemoteAddress); err == nil {
		if req.Headers.Has("X-Forwarded-For") {
			xff := req.Headers.Values("X-Forwarded-For")
			req.Headers.Del("X-Forwarded-For")
			host = strings.Join(append(xff, host), ", ")
		}
		req.Headers.Add("X-Forwarded-For", host)
		rec.XForwardedFor = host
	}
	if !req.Headers.Has("X-Forwarded-Proto") {
		req.Headers.Add("X-Forwarded-Proto", "http")
	}
}

func wantsKeepAlive(req *h1.Request) bool {
	if req.Headers.HasToken("Connection", "close") {
		return false
	}
	if req.Proto == "HTTP/1.0" {
		return req.Headers.HasToken("Connection", "keep-alive")
	}
	return true
}

func asLocalReply(err error) *LocalReply {
	var lr *LocalReply
	if errors.As(err, &lr) {
		return lr
	}
	return &LocalReply{Status: 503, Flag: accesslog.NoRouteFound, Details: "route_not_found", Body: err.Error()}
}

// rejectOverload answers the first request of a connection over the
// connection limit with 503 and flag OM.
func (p *Proxy) rejectOverload(c net.Conn, br *bufio.Reader) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(p.cfg.HeaderReadTimeout))
	req, err := h1.ReadRequest(br, p.cfg.Limits)
	rec := p.newRecord(c, start)
	rec.Protocol = "HTTP/1.1"
	if err == nil {
		rec.Method, rec.Path, rec.Authority, rec.Protocol = req.Method, req.Target, req.Headers.Get("Host"), req.Proto
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	p.writeLocalReply(c, &LocalReply{Status: 503, Flag: accesslog.OverloadManager, Details: "overload_manager",
		Body: fmt.Sprintf("overloaded: the sidecar already serves its maximum of %d connections", p.cfg.Limiter.Max)}, rec, true)
	p.cfg.Logger.Warn("connection refused: connection limit reached", "limit", p.cfg.Limiter.Max, "downstream", c.RemoteAddr().String())
	p.finish(rec, nil)
}
