package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/h2tunnel"
	"github.com/wsmesh/wsmesh/internal/relay"
)

// upgradeH1 forwards an RFC 6455 upgrade request. On 101 the connection
// becomes a byte stream relayed both ways until both sides close; any other
// answer is forwarded as a plain response.
func (p *Proxy) upgradeH1(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request, t *Target, rec *accesslog.Record, ho *handoff) bool {
	if body, _ := h1.RequestBody(req); body.Kind != h1.BodyNone {
		p.writeLocalReply(c, &LocalReply{Status: 400, Flag: accesslog.DownstreamProtocolError, Details: "http1.invalid_upgrade", Body: "a WebSocket upgrade request must not carry a body"}, rec, true)
		p.finish(rec, t)
		return false
	}
	if req.Headers.Get("Sec-WebSocket-Key") == "" || req.Proto != "HTTP/1.1" {
		p.writeLocalReply(c, &LocalReply{Status: 400, Flag: accesslog.DownstreamProtocolError, Details: "http1.invalid_upgrade", Body: "WebSocket upgrade needs HTTP/1.1 and a Sec-WebSocket-Key"}, rec, true)
		p.finish(rec, t)
		return false
	}
	if t.H2 && p.cfg.H2 != nil {
		if done, keep := p.upgradeOverH2(ctx, c, br, req, t, rec, ho); done {
			return keep
		}
	}
	u, err := p.dial(ctx, t)
	if err != nil {
		noteConnectFailure(rec, err)
		p.writeLocalReply(c, connectFailure(err), rec, true)
		p.finish(rec, t)
		return false
	}
	rec.UpstreamHost = u.addr
	rec.UpstreamLocalAddress = addrString(u.LocalAddr())

	out := *req
	out.Headers = append(h1.Headers(nil), req.Headers...)
	upgrade := req.Headers.Get("Upgrade")
	h1.RemoveHopByHop(&out.Headers, false)
	out.Headers.Del("Content-Length")
	out.Headers.Add("Connection", "Upgrade")
	out.Headers.Add("Upgrade", upgrade)
	sent := time.Now()
	if _, err := writeHead(u, h1.AppendRequest, &out); err != nil {
		u.close()
		p.writeLocalReply(c, upstreamFailure(err), rec, true)
		p.finish(rec, t)
		return false
	}
	if p.cfg.ResponseHeaderTimeout > 0 {
		_ = u.SetReadDeadline(time.Now().Add(p.cfg.ResponseHeaderTimeout))
	}
	resp, err := p.readFinalResponse(c, br, u, req, h1.Body{}, false, rec)
	_ = u.SetReadDeadline(time.Time{})
	if err != nil {
		u.close()
		p.writeLocalReply(c, upstreamFailure(err), rec, true)
		p.finish(rec, t)
		return false
	}
	rec.UpstreamServiceTime = time.Since(sent)
	rec.ResponseCode = resp.Status
	if rec.ResponseCodeDetails != fallbackDetails {
		rec.ResponseCodeDetails = "via_upstream"
	}
	if resp.Status != 101 {
		return p.relayRejectedUpgrade(c, u, req, resp, rec, t)
	}
	if !resp.Headers.HasToken("Upgrade", "websocket") {
		u.close()
		p.writeLocalReply(c, &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_protocol_error", Body: "upstream answered 101 without Upgrade: websocket"}, rec, true)
		p.finish(rec, t)
		return false
	}
	outResp := *resp
	outResp.Proto = "HTTP/1.1"
	outResp.Headers = append(h1.Headers(nil), resp.Headers...)
	h1.RemoveHopByHop(&outResp.Headers, false)
	outResp.Headers.Add("Upgrade", "websocket")
	outResp.Headers.Add("Connection", "Upgrade")
	if _, err := writeHead(c, h1.AppendResponse, &outResp); err != nil {
		u.close()
		rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
		p.finish(rec, t)
		return false
	}
	rec.WebSocket = &accesslog.WebSocket{
		Subprotocol: resp.Headers.Get("Sec-WebSocket-Protocol"),
		Extensions:  resp.Headers.Get("Sec-WebSocket-Extensions"),
	}
	downPre := takeDownstream(br)
	upPre := takeBuffered(u.br)
	u.release()
	p.relayWebSocket(ctx, c, downPre, u.Conn, upPre, rec, t, ho)
	return false
}

// relayRejectedUpgrade forwards a non-101 answer to an upgrade request.
func (p *Proxy) relayRejectedUpgrade(c net.Conn, u *upConn, req *h1.Request, resp *h1.Response, rec *accesslog.Record, t *Target) bool {
	defer u.close()
	rbody, err := h1.ResponseBody(req.Method, resp)
	if err != nil {
		p.writeLocalReply(c, &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_protocol_error", Body: err.Error()}, rec, true)
		p.finish(rec, t)
		return false
	}
	outResp := *resp
	outResp.Proto = "HTTP/1.1"
	outResp.Headers = append(h1.Headers(nil), resp.Headers...)
	h1.RemoveHopByHop(&outResp.Headers, rbody.Kind == h1.BodyChunked)
	if rbody.Kind == h1.BodyChunked {
		outResp.Headers.Set("Transfer-Encoding", "chunked")
	}
	outResp.Headers.Set("Connection", "close")
	if _, err := writeHead(c, h1.AppendResponse, &outResp); err == nil {
		rec.BytesSent, _ = h1.CopyBody(c, u.br, rbody)
	}
	p.finish(rec, t)
	return false
}

// takeDownstream takes the bytes the downstream connection's reader holds
// past the upgrade head and then empties the reader, so its buffer is not
// kept alive for the life of the WebSocket. The connection speaks no more
// HTTP: nothing reads from br afterwards.
func takeDownstream(br *bufio.Reader) []byte {
	b := takeBuffered(br)
	*br = bufio.Reader{}
	return b
}

// takeBuffered copies out the bytes br read past the head. The caller
// still owns br (an upstream's goes back to the pool with release).
func takeBuffered(br *bufio.Reader) []byte {
	n := br.Buffered()
	var b []byte
	if n > 0 {
		b = make([]byte, n)
		_, _ = br.Read(b)
	}
	return b
}

// relayWebSocket starts relaying an upgraded connection and returns. When
// the relay ends it completes and logs the record, calls t.Done and does
// the serving goroutine's remaining work, taken from ho.
func (p *Proxy) relayWebSocket(ctx context.Context, down net.Conn, downPre []byte, up net.Conn, upPre []byte, rec *accesslog.Record, t *Target, ho *handoff) {
	ws := &relayedWebSocket{Tracked: Tracked{Reporter: p.cfg.Reporter, rec: rec}, p: p, t: t, ho: ho}
	if p.cfg.OnWebSocketOpen != nil {
		p.cfg.OnWebSocketOpen()
	}
	p.cfg.Tracker.Add(&ws.Tracked)
	ho.take()
	t.Endpoints = nil // routing is over; the relay may live for days
	p.relays.Add(1)
	h := relay.Start(ctx, down, up, relay.Prefetched{Down: downPre, Up: upPre}, relay.Options{
		IdleTimeout:       p.cfg.WebSocketIdleTimeout,
		Observe:           p.cfg.ObserveWebSocket,
		Counters:          &ws.Counters,
		PerMessageDeflate: strings.Contains(rec.WebSocket.Extensions, "permessage-deflate"),
		ParkAfter:         p.cfg.ParkAfter,
	}, ws)
	ws.started(h)
}

// relayedWebSocket is one WebSocket being relayed: the Tracker's entry,
// and what its relay reports to when it ends. One allocation per
// WebSocket, held as long as the WebSocket is open.
type relayedWebSocket struct {
	Tracked
	p  *Proxy
	t  *Target
	ho *handoff
}

// RelayEnded logs the WebSocket's record and does the work the serving
// goroutine left to the relay.
func (ws *relayedWebSocket) RelayEnded(res relay.Result) {
	p := ws.p
	p.webSocketEnded(res, ws.rec, &ws.Tracked, ws.t)
	p.cfg.Tracker.Remove(&ws.Tracked)
	if ws.t.Done != nil {
		ws.t.Done()
	}
	ws.ho.runAll()
	p.relays.Done()
}

// webSocketEnded completes and logs the record of a relayed WebSocket.
func (p *Proxy) webSocketEnded(res relay.Result, rec *accesslog.Record, tr *Tracked, t *Target) {
	rec.BytesReceived += res.BytesDownToUp
	rec.BytesSent += res.BytesUpToDown
	ws := rec.WebSocket
	observeInto(ws, res)
	switch {
	case res.WentAway:
		rec.ConnectionTerminationDetails = tr.GoingAwayReason() + ": close 1001 (going away) sent to " + strconv.Itoa(res.CloseSent) + " peer(s)"
	case res.IdleTimedOut:
		rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.StreamIdleTimeout)
		rec.ConnectionTerminationDetails = "websocket idle timeout"
	case res.Err != nil:
		var se *relay.SideError
		var reset *h2tunnel.StreamError
		switch {
		case errors.As(res.Err, &se) && se.Side == relay.SideUpstream && errors.As(res.Err, &reset) && reset.Remote:
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.UpstreamRemoteReset)
		case errors.As(res.Err, &se) && se.Side == relay.SideUpstream:
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.UpstreamConnectionTermination)
		default:
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
		}
		rec.ConnectionTerminationDetails = res.Err.Error()
	}
	p.finish(rec, t)
}

// observeInto copies the observers' findings into the record and decides
// which side closed first: the side that sent the first close frame (when
// both did, the one whose last bytes came earlier, since the answer to a
// close is the last thing its sender writes), else the side whose stream
// ended first.
func observeInto(ws *accesslog.WebSocket, res relay.Result) {
	var downClose, upClose bool
	var downCode, upCode int
	var downReason, upReason string
	if res.Down != nil {
		ws.FramesDownstream = res.Down.Frames()
		ws.MessagesDownstream = res.Down.Messages()
		downCode, downReason, downClose = res.Down.Close()
	}
	if res.Up != nil {
		ws.FramesUpstream = res.Up.Frames()
		ws.MessagesUpstream = res.Up.Messages()
		upCode, upReason, upClose = res.Up.Close()
	}
	switch {
	case res.Lost != relay.SideNone:
		// A peer's connection failed and wsmesh told the other one why.
		ws.ClosedBy = res.Lost.String()
		if res.Lost == relay.SideUpstream {
			ws.CloseCode, ws.CloseReason = 1014, "upstream connection lost"
		} else {
			ws.CloseCode, ws.CloseReason = 1001, "downstream connection lost"
		}
	case downClose && upClose:
		if res.Up.LastActivity().Before(res.Down.LastActivity()) {
			ws.ClosedBy, ws.CloseCode, ws.CloseReason = "upstream", upCode, upReason
		} else {
			ws.ClosedBy, ws.CloseCode, ws.CloseReason = "downstream", downCode, downReason
		}
	case downClose:
		ws.ClosedBy, ws.CloseCode, ws.CloseReason = "downstream", downCode, downReason
	case upClose:
		ws.ClosedBy, ws.CloseCode, ws.CloseReason = "upstream", upCode, upReason
	default:
		ws.ClosedBy = res.FirstEOF.String()
		if ws.ClosedBy == "" && res.Err != nil {
			var se *relay.SideError
			if errors.As(res.Err, &se) {
				ws.ClosedBy = se.Side.String()
			}
		}
	}
}
