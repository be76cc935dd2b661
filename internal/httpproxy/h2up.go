package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/h2tunnel"
)

// fallbackDetails marks a WebSocket carried over HTTP/1.1 because the peer
// did not advertise extended CONNECT although the DestinationRule asked for
// HTTP/2.
const fallbackDetails = "via_upstream;http1_fallback:peer_did_not_advertise_extended_connect"

// upgradeOverH2 carries a WebSocket upgrade as an RFC 8441 extended CONNECT
// on a pooled HTTP/2 connection. It reports done=false when the request
// should go over HTTP/1.1 instead (the peer does not allow extended
// CONNECT and strict mode is off); t.Endpoints is then narrowed to the
// endpoints that must be tried that way.
func (p *Proxy) upgradeOverH2(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request, t *Target, rec *accesslog.Record, ho *handoff) (done, keepAlive bool) {
	creq, err := h2tunnel.UpgradeToConnect(req, "http")
	if err != nil {
		p.writeLocalReply(c, &LocalReply{Status: 400, Flag: accesslog.DownstreamProtocolError, Details: "http1.invalid_upgrade", Body: err.Error()}, rec, true)
		p.finish(rec, t)
		return true, false
	}
	clientKey := req.Headers.Get("Sec-WebSocket-Key")
	strict := p.cfg.H2Strict
	var fallback []string
	var lastErr error
	for _, addr := range t.Endpoints {
		if ok, known := p.cfg.H2.PeerSupportsExtendedConnect(addr); known && !ok && !strict {
			fallback = append(fallback, addr)
			continue
		}
		sent := time.Now()
		st, err := p.cfg.H2.RoundTrip(h2tunnel.WithDialKeepAlive(ctx, t.KeepAlive), addr, creq)
		if errors.Is(err, h2tunnel.ErrExtendedConnectUnsupported) {
			if strict {
				rec.UpstreamHost = addr
				p.writeLocalReply(c, &LocalReply{
					Status: 503, Flag: accesslog.UpstreamRemoteReset,
					Details: "upstream_reset_before_response_started{extended_connect_not_allowed}",
					Body:    "upstream connect error or disconnect/reset before headers. reset reason: the peer did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (allow_connect is off at the server sidecar)",
				}, rec, true)
				p.finish(rec, t)
				return true, false
			}
			p.noteFallback(addr)
			fallback = append(fallback, addr)
			continue
		}
		if err != nil {
			lastErr = err
			var se *h2tunnel.StreamError
			if errors.As(err, &se) {
				// The peer reset this stream before answering: do not retry
				// elsewhere, the request may have reached the app.
				rec.UpstreamHost = addr
				p.writeLocalReply(c, &LocalReply{Status: 503, Flag: accesslog.UpstreamRemoteReset,
					Details: "upstream_reset_before_response_started{remote_reset}",
					Body:    "upstream connect error or disconnect/reset before headers. reset reason: remote reset (" + se.Error() + ")"}, rec, true)
				p.finish(rec, t)
				return true, false
			}
			p.cfg.Logger.Debug("HTTP/2 upstream failed", "endpoint", addr, "cause", err)
			continue
		}
		rec.UpstreamHost = addr
		rec.UpstreamLocalAddress = sharedAddrString(st.LocalAddr()) // the HTTP/2 connection's
		rec.UpstreamServiceTime = time.Since(sent)
		resp, err := h2tunnel.ConnectResponseToH1(st.Response.Status, st.Response.Header, clientKey)
		if err != nil {
			st.Close()
			p.writeLocalReply(c, &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_protocol_error", Body: err.Error()}, rec, true)
			p.finish(rec, t)
			return true, false
		}
		rec.ResponseCode = resp.Status
		rec.ResponseCodeDetails = "via_upstream"
		if resp.Status != 101 {
			p.relayH2Refusal(c, st, resp, rec)
			p.finish(rec, t)
			return true, false
		}
		if _, err := writeHead(c, h1.AppendResponse, resp); err != nil {
			st.Close()
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
			p.finish(rec, t)
			return true, false
		}
		rec.WebSocket = &accesslog.WebSocket{
			Subprotocol: resp.Headers.Get("Sec-WebSocket-Protocol"),
			Extensions:  resp.Headers.Get("Sec-WebSocket-Extensions"),
		}
		st.Response.Header = nil // converted and logged; not kept for the WebSocket's life
		p.relayWebSocket(ctx, c, takeDownstream(br), st, nil, rec, t, ho)
		return true, false
	}
	if len(fallback) > 0 {
		t.Endpoints = fallback
		rec.ResponseCodeDetails = fallbackDetails
		return false, false
	}
	if lastErr == nil {
		lastErr = errors.New("no endpoint")
	}
	cerr := &connectError{addr: t.Endpoints[len(t.Endpoints)-1], err: lastErr}
	noteConnectFailure(rec, cerr)
	p.writeLocalReply(c, connectFailure(cerr), rec, true)
	p.finish(rec, t)
	return true, false
}

func (p *Proxy) noteFallback(addr string) {
	if _, loaded := p.fallbk.LoadOrStore(addr, time.Now()); !loaded {
		p.cfg.Logger.Warn("peer does not allow HTTP/2 extended CONNECT; WebSockets to it fall back to HTTP/1.1 (enable allow_connect at the server sidecar with the EnvoyFilter, or set h2UpgradePolicy DO_NOT_UPGRADE)", "endpoint", addr)
	}
	if p.cfg.OnFallback != nil {
		p.cfg.OnFallback(addr)
	}
}

// relayH2Refusal forwards a non-2xx answer to an extended CONNECT.
func (p *Proxy) relayH2Refusal(c net.Conn, st *h2tunnel.Stream, resp *h1.Response, rec *accesslog.Record) {
	defer st.Close()
	resp.Headers.Del("Transfer-Encoding")
	if !resp.Headers.Has("Content-Length") {
		resp.Headers.Set("Transfer-Encoding", "chunked")
	}
	resp.Headers.Set("Connection", "close")
	if _, err := writeHead(c, h1.AppendResponse, resp); err != nil {
		return
	}
	if resp.Headers.Has("Content-Length") {
		rec.BytesSent, _ = io.Copy(c, st)
	} else {
		rec.BytesSent, _ = copyChunkedFrom(c, st)
	}
}

// forwardPlainOverH2 carries a plain HTTP/1.1 request as an HTTP/2 stream.
func (p *Proxy) forwardPlainOverH2(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request, t *Target, rec *accesslog.Record, keepAlive bool) bool {
	body, _ := h1.RequestBody(req)
	hreq, err := h2tunnel.RequestToH2(req, "http")
	if err != nil {
		p.writeLocalReply(c, &LocalReply{Status: 400, Flag: accesslog.DownstreamProtocolError, Details: "http1.codec_error", Body: err.Error()}, rec, true)
		p.finish(rec, t)
		return false
	}
	var st *h2tunnel.Stream
	var lastErr error
	sent := time.Now()
	for _, addr := range t.Endpoints {
		st, err = p.cfg.H2.OpenStream(h2tunnel.WithDialKeepAlive(ctx, t.KeepAlive), addr, hreq)
		if err == nil {
			rec.UpstreamHost = addr
			break
		}
		lastErr = err
	}
	if st == nil {
		cerr := &connectError{addr: t.Endpoints[len(t.Endpoints)-1], err: lastErr}
		noteConnectFailure(rec, cerr)
		p.writeLocalReply(c, connectFailure(cerr), rec, body.Kind != h1.BodyNone || !keepAlive)
		p.finish(rec, t)
		return keepAlive && body.Kind == h1.BodyNone
	}
	defer st.Close()
	rec.UpstreamLocalAddress = sharedAddrString(st.LocalAddr()) // the HTTP/2 connection's
	if body.Kind != h1.BodyNone {
		n, err := io.Copy(st, h1.BodyReader(br, body))
		rec.BytesReceived = n
		if err != nil {
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
			rec.ConnectionTerminationDetails = err.Error()
			p.finish(rec, t)
			return false
		}
	}
	if body.Kind != h1.BodyNone {
		_ = st.CloseWrite()
	}
	hresp, err := st.ReadResponse(ctx)
	if err != nil {
		flag := accesslog.UpstreamConnectionTermination
		details := "upstream_reset_before_response_started{connection_termination}"
		var se *h2tunnel.StreamError
		if errors.As(err, &se) {
			flag, details = accesslog.UpstreamRemoteReset, "upstream_reset_before_response_started{remote_reset}"
		}
		p.writeLocalReply(c, &LocalReply{Status: 503, Flag: flag, Details: details, Body: "upstream connect error or disconnect/reset before headers. reset reason: " + err.Error()}, rec, true)
		p.finish(rec, t)
		return false
	}
	rec.UpstreamServiceTime = time.Since(sent)
	resp := h2tunnel.ResponseToH1(hresp.Status, hresp.Header)
	rec.ResponseCode = resp.Status
	rec.ResponseCodeDetails = "via_upstream"
	noBody := req.Method == "HEAD" || resp.Status == 204 || resp.Status == 304
	chunked := !noBody && !resp.Headers.Has("Content-Length")
	if chunked {
		resp.Headers.Set("Transfer-Encoding", "chunked")
	}
	if !keepAlive {
		resp.Headers.Set("Connection", "close")
	}
	if _, err := writeHead(c, h1.AppendResponse, resp); err != nil {
		rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
		p.finish(rec, t)
		return false
	}
	if !noBody {
		var n int64
		var err error
		if chunked {
			n, err = copyChunkedFrom(c, st)
		} else {
			want, _ := strconv.ParseInt(resp.Headers.Get("Content-Length"), 10, 64)
			n, err = io.CopyN(c, st, want)
		}
		rec.BytesSent = n
		if err != nil {
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.UpstreamConnectionTermination)
			rec.ConnectionTerminationDetails = err.Error()
			p.finish(rec, t)
			return false
		}
	}
	p.finish(rec, t)
	return keepAlive
}
