package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
)

// forwardH1 forwards one plain request over HTTP/1.1 and its response back.
func (p *Proxy) forwardH1(ctx context.Context, c net.Conn, br *bufio.Reader, req *h1.Request, t *Target, rec *accesslog.Record, keepAlive bool) bool {
	body, _ := h1.RequestBody(req)
	out := *req
	out.Headers = append(h1.Headers(nil), req.Headers...)
	h1.RemoveHopByHop(&out.Headers, body.Kind == h1.BodyChunked)
	if body.Kind == h1.BodyChunked {
		out.Headers.Set("Transfer-Encoding", "chunked")
	}
	out.Proto = "HTTP/1.1"
	head := h1.AppendRequest(nil, &out)
	expect := req.Headers.HasToken("Expect", "100-continue") && body.Kind != h1.BodyNone

	var u *upConn
	var resp *h1.Response
	var sent time.Time
	for attempt := 0; ; attempt++ {
		reused := false
		if attempt == 0 {
			u = p.poolGet(t)
			reused = u != nil
		}
		if u == nil {
			var err error
			if u, err = p.dial(ctx, t); err != nil {
				lr := connectFailure(err)
				noteConnectFailure(rec, err)
				p.writeLocalReply(c, lr, rec, body.Kind != h1.BodyNone || !keepAlive)
				p.finish(rec, t)
				return keepAlive && body.Kind == h1.BodyNone
			}
		}
		rec.UpstreamHost = u.addr
		rec.UpstreamLocalAddress = addrString(u.LocalAddr())
		sent = time.Now()
		_, werr := u.Write(head)
		if werr == nil && body.Kind != h1.BodyNone && !expect {
			var n int64
			n, werr = h1.CopyBody(u, br, body)
			rec.BytesReceived = n
			if werr != nil && !isWriteErr(werr) {
				// The downstream body broke off.
				u.close()
				rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
				rec.ResponseCodeDetails = "downstream_remote_disconnect"
				p.finish(rec, t)
				return false
			}
		}
		var rerr error
		if werr == nil {
			if p.cfg.ResponseHeaderTimeout > 0 {
				_ = u.SetReadDeadline(time.Now().Add(p.cfg.ResponseHeaderTimeout))
			}
			resp, rerr = p.readFinalResponse(c, br, u, req, body, expect, rec)
			_ = u.SetReadDeadline(time.Time{})
		}
		err := werr
		if err == nil {
			err = rerr
		}
		if err == nil {
			break
		}
		u.close()
		// A kept-alive connection the upstream closed while idle: retry once
		// on a fresh connection when no body byte was consumed.
		if reused && attempt == 0 && body.Kind == h1.BodyNone {
			u = nil
			continue
		}
		lr := upstreamFailure(err)
		p.writeLocalReply(c, lr, rec, true)
		p.finish(rec, t)
		return false
	}
	rec.UpstreamServiceTime = time.Since(sent)

	rbody, err := h1.ResponseBody(req.Method, resp)
	if err != nil {
		u.close()
		p.writeLocalReply(c, &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_protocol_error", Body: err.Error()}, rec, true)
		p.finish(rec, t)
		return false
	}
	upKeep := resp.Proto == "HTTP/1.1" && !resp.Headers.HasToken("Connection", "close") && rbody.Kind != h1.BodyUntilClose
	outResp := *resp
	outResp.Proto = "HTTP/1.1"
	outResp.Headers = append(h1.Headers(nil), resp.Headers...)
	h1.RemoveHopByHop(&outResp.Headers, rbody.Kind == h1.BodyChunked)
	if rbody.Kind == h1.BodyChunked {
		outResp.Headers.Set("Transfer-Encoding", "chunked")
	}
	if rbody.Kind == h1.BodyUntilClose || !keepAlive || (expect && rec.BytesReceived == 0 && resp.Status >= 200) {
		keepAlive = false
		outResp.Headers.Set("Connection", "close")
	}
	rec.ResponseCode = resp.Status
	rec.ResponseCodeDetails = "via_upstream"
	if _, err := writeHead(c, h1.AppendResponse, &outResp); err != nil {
		u.close()
		rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
		p.finish(rec, t)
		return false
	}
	n, err := h1.CopyBody(c, u.br, rbody)
	rec.BytesSent = n
	if err != nil {
		u.close()
		if isWriteErr(err) {
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
		} else {
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.UpstreamConnectionTermination)
			rec.ConnectionTerminationDetails = "upstream closed mid-response: " + err.Error()
		}
		p.finish(rec, t)
		return false
	}
	if upKeep {
		p.pool.put(u)
	} else {
		u.close()
	}
	p.finish(rec, t)
	return keepAlive
}

func (p *Proxy) poolGet(t *Target) *upConn {
	for _, addr := range t.Endpoints {
		if u := p.pool.get(addr); u != nil {
			return u
		}
	}
	return nil
}

// readFinalResponse reads upstream response heads, forwarding 1xx interim
// answers downstream. With Expect: 100-continue the request body is sent
// once the upstream asks for it.
func (p *Proxy) readFinalResponse(c net.Conn, br *bufio.Reader, u *upConn, req *h1.Request, body h1.Body, expect bool, rec *accesslog.Record) (*h1.Response, error) {
	for {
		resp, err := h1.ReadResponse(u.br, p.cfg.Limits)
		if err != nil {
			return nil, err
		}
		if resp.Status >= 200 || resp.Status == 101 {
			return resp, nil
		}
		interim := *resp
		interim.Proto = "HTTP/1.1"
		if _, err := writeHead(c, h1.AppendResponse, &interim); err != nil {
			return nil, err
		}
		if resp.Status == 100 && expect {
			expect = false
			n, err := h1.CopyBody(u, br, body)
			rec.BytesReceived = n
			if err != nil {
				return nil, err
			}
		}
	}
}

// isWriteErr reports whether err came from writing to a connection (as
// opposed to reading the other side of a copy).
func isWriteErr(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "write"
}

// upstreamFailure maps an error before a response head to Envoy's answer.
func upstreamFailure(err error) *LocalReply {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &LocalReply{Status: 504, Flag: accesslog.UpstreamRequestTimeout, Details: "response_timeout", Body: "upstream request timeout"}
	}
	var he *h1.Error
	if errors.As(err, &he) {
		return &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_reset_before_response_started{protocol_error}", Body: "upstream sent an invalid response: " + he.Err.Error()}
	}
	reason := "connection termination"
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		reason = err.Error()
	}
	return &LocalReply{
		Status:  503,
		Flag:    accesslog.UpstreamConnectionTermination,
		Details: "upstream_reset_before_response_started{connection_termination}",
		Body:    "upstream connect error or disconnect/reset before headers. reset reason: " + reason,
	}
}
