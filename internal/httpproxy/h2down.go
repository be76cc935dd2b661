package httpproxy

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2/hpack"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
	"github.com/wsmesh/wsmesh/internal/h2tunnel"
)

// ServeH2Stream serves one request stream that arrived over HTTP/2 (the
// inbound side of a tunnel). An RFC 8441 extended CONNECT for websocket
// becomes an HTTP/1.1 Upgrade to the upstream (the local app) and the
// app's 101 becomes 200; other requests are forwarded as HTTP/1.1.
func (p *Proxy) ServeH2Stream(ctx context.Context, st *h2tunnel.ServerStream) {
	start := time.Now()
	rec := &accesslog.Record{
		StartTime:               start,
		Protocol:                "HTTP/2",
		DownstreamLocalAddress:  sharedAddrString(st.LocalAddr()),
		DownstreamRemoteAddress: sharedAddrString(st.RemoteAddr()), // the peer sidecar's HTTP/2 connection
		UpstreamServiceTime:     -1,
		Authority:               st.Request.Authority,
		Path:                    st.Request.Path,
	}
	hreq := st.Request
	if hreq.Method == "CONNECT" && strings.EqualFold(hreq.Protocol, "websocket") {
		ho := &handoff{detach: st}
		defer ho.run()
		p.tunnelToH1(ctx, st, rec, ho)
		return
	}
	p.plainH2ToH1(ctx, st, rec)
}

// h2Reply answers a stream on the proxy's own behalf.
func (p *Proxy) h2Reply(st *h2tunnel.ServerStream, lr *LocalReply, rec *accesslog.Record) {
	body := lr.Body
	if body == "" {
		body = lr.Details
	}
	body += "\n"
	if err := st.WriteResponse(lr.Status, []hpack.HeaderField{
		{Name: "content-type", Value: "text/plain"},
		{Name: "content-length", Value: strconv.Itoa(len(body))},
		{Name: "server", Value: "wsmesh"},
	}, false); err == nil {
		_, _ = io.WriteString(st, body)
		_ = st.CloseWrite()
	}
	rec.ResponseCode = lr.Status
	rec.ResponseFlags = joinFlags(rec.ResponseFlags, lr.Flag)
	rec.ResponseCodeDetails = lr.Details
	rec.BytesSent += int64(len(body))
}

// routeH2 records the HTTP/1.1 form of a stream's request, adds the
// forwarding fields and routes it. When the request cannot be routed it
// answers the stream, finishes the record and returns nil.
func (p *Proxy) routeH2(st *h2tunnel.ServerStream, req *h1.Request, rec *accesslog.Record) *Target {
	rec.Method = req.Method
	rec.UserAgent = req.Headers.Get("User-Agent")
	prepareForwarding(req, rec)
	t, err := p.cfg.Router.Route(req, st.LocalAddr())
	if err != nil {
		p.h2Reply(st, asLocalReply(err), rec)
		p.finish(rec, nil)
		return nil
	}
	rec.RouteName, rec.UpstreamCluster = t.RouteName, t.Cluster
	return t
}

// tunnelToH1 converts an extended CONNECT to an HTTP/1.1 upgrade.
func (p *Proxy) tunnelToH1(ctx context.Context, st *h2tunnel.ServerStream, rec *accesslog.Record, ho *handoff) {
	req, expectedAccept, err := h2tunnel.ConnectToUpgrade(st.Request)
	if err != nil {
		p.h2Reply(st, &LocalReply{Status: 400, Flag: accesslog.DownstreamProtocolError, Details: "invalid_extended_connect", Body: err.Error()}, rec)
		p.finish(rec, nil)
		return
	}
	keyGenerated := !hasField(st.Request.Header, "sec-websocket-key")
	t := p.routeH2(st, req, rec)
	if t == nil {
		return
	}
	defer ho.unlessTaken(t.Done)
	u, err := p.dial(ctx, t)
	if err != nil {
		noteConnectFailure(rec, err)
		p.h2Reply(st, connectFailure(err), rec)
		p.finish(rec, t)
		return
	}
	rec.UpstreamHost = u.addr
	rec.UpstreamLocalAddress = addrString(u.LocalAddr())
	sent := time.Now()
	if _, err := writeHead(u, h1.AppendRequest, req); err != nil {
		u.close()
		p.h2Reply(st, upstreamFailure(err), rec)
		p.finish(rec, t)
		return
	}
	if p.cfg.ResponseHeaderTimeout > 0 {
		_ = u.SetReadDeadline(time.Now().Add(p.cfg.ResponseHeaderTimeout))
	}
	resp, err := h1.ReadResponse(u.br, p.cfg.Limits)
	_ = u.SetReadDeadline(time.Time{})
	if err != nil {
		u.close()
		p.h2Reply(st, upstreamFailure(err), rec)
		p.finish(rec, t)
		return
	}
	rec.UpstreamServiceTime = time.Since(sent)
	status, hdr, err := h2tunnel.UpgradeResponseToH2(resp, expectedAccept, keyGenerated)
	if err != nil {
		u.close()
		p.h2Reply(st, &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_protocol_error", Body: "the application's WebSocket handshake answer is invalid: " + err.Error()}, rec)
		p.finish(rec, t)
		return
	}
	rec.ResponseCode = resp.Status
	rec.ResponseCodeDetails = "via_upstream"
	if resp.Status != 101 {
		defer u.close()
		rbody, err := h1.ResponseBody(req.Method, resp)
		if err != nil {
			p.h2Reply(st, &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_protocol_error", Body: err.Error()}, rec)
			p.finish(rec, t)
			return
		}
		p.writeH2Response(st, status, hdr, h1.BodyReader(u.br, rbody), rbody, rec)
		p.finish(rec, t)
		return
	}
	if err := st.WriteResponse(status, hdr, false); err != nil {
		u.close()
		rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
		p.finish(rec, t)
		return
	}
	rec.WebSocket = &accesslog.WebSocket{
		Subprotocol: resp.Headers.Get("Sec-WebSocket-Protocol"),
		Extensions:  resp.Headers.Get("Sec-WebSocket-Extensions"),
	}
	upPre := takeBuffered(u.br)
	u.release()
	st.Request = nil // converted and logged; not kept for the WebSocket's life
	p.relayWebSocket(ctx, st, nil, u.Conn, upPre, rec, t, ho)
}

// plainH2ToH1 forwards a plain HTTP/2 request to an HTTP/1.1 upstream.
func (p *Proxy) plainH2ToH1(ctx context.Context, st *h2tunnel.ServerStream, rec *accesslog.Record) {
	hreq := st.Request
	req := h2RequestToH1(hreq)
	t := p.routeH2(st, req, rec)
	if t == nil {
		return
	}
	if t.Done != nil {
		defer t.Done()
	}
	var err error
	chunked := !hreq.NoBody && !req.Headers.Has("Content-Length")
	if chunked {
		req.Headers.Set("Transfer-Encoding", "chunked")
	}
	u := p.poolGet(t)
	if u == nil {
		if u, err = p.dial(ctx, t); err != nil {
			noteConnectFailure(rec, err)
			p.h2Reply(st, connectFailure(err), rec)
			p.finish(rec, t)
			return
		}
	}
	rec.UpstreamHost = u.addr
	rec.UpstreamLocalAddress = addrString(u.LocalAddr())
	sent := time.Now()
	_, err = writeHead(u, h1.AppendRequest, req)
	if err == nil && !hreq.NoBody {
		var n int64
		if chunked {
			n, err = copyChunkedFrom(u, st)
		} else {
			n, err = io.Copy(u, st)
		}
		rec.BytesReceived = n
	}
	var resp *h1.Response
	if err == nil {
		resp, err = h1.ReadResponse(u.br, p.cfg.Limits)
		for err == nil && resp.Status >= 100 && resp.Status < 200 {
			resp, err = h1.ReadResponse(u.br, p.cfg.Limits) // interim answers are not relayed over HTTP/2
		}
	}
	if err != nil {
		u.close()
		var se *h2tunnel.StreamError
		if errors.As(err, &se) {
			rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamRemoteReset)
			p.finish(rec, t)
			return
		}
		p.h2Reply(st, upstreamFailure(err), rec)
		p.finish(rec, t)
		return
	}
	rec.UpstreamServiceTime = time.Since(sent)
	rec.ResponseCode = resp.Status
	rec.ResponseCodeDetails = "via_upstream"
	rbody, err := h1.ResponseBody(req.Method, resp)
	if err != nil {
		u.close()
		p.h2Reply(st, &LocalReply{Status: 502, Flag: accesslog.UpstreamProtocolError, Details: "upstream_protocol_error", Body: err.Error()}, rec)
		p.finish(rec, t)
		return
	}
	hdr := h1ResponseFieldsToH2(resp.Headers)
	ok := p.writeH2Response(st, resp.Status, hdr, h1.BodyReader(u.br, rbody), rbody, rec)
	if ok && rbody.Kind != h1.BodyUntilClose && !resp.Headers.HasToken("Connection", "close") {
		p.pool.put(u)
	} else {
		u.close()
	}
	p.finish(rec, t)
}

// writeH2Response sends a response head and body on st.
func (p *Proxy) writeH2Response(st *h2tunnel.ServerStream, status int, hdr []hpack.HeaderField, body io.Reader, b h1.Body, rec *accesslog.Record) bool {
	if err := st.WriteResponse(status, hdr, b.Kind == h1.BodyNone); err != nil {
		rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.DownstreamConnectionTermination)
		return false
	}
	if b.Kind == h1.BodyNone {
		return true
	}
	n, err := io.Copy(st, body)
	rec.BytesSent += n
	if err != nil {
		rec.ResponseFlags = joinFlags(rec.ResponseFlags, accesslog.UpstreamConnectionTermination)
		rec.ConnectionTerminationDetails = err.Error()
		_ = st.Close()
		return false
	}
	return st.CloseWrite() == nil
}

// h2RequestToH1 builds the HTTP/1.1 form of a plain HTTP/2 request.
func h2RequestToH1(r *h2tunnel.Request) *h1.Request {
	target := r.Path
	if r.Method == "CONNECT" {
		target = r.Authority
	}
	hdr := make(h1.Headers, 0, len(r.Header)+1)
	if r.Authority != "" {
		hdr = append(hdr, h1.Header{Name: "Host", Value: r.Authority})
	}
	for _, f := range r.Header {
		switch f.Name {
		case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te":
			continue
		}
		hdr = append(hdr, h1.Header{Name: h1.TitleName(f.Name), Value: f.Value})
	}
	return &h1.Request{Method: r.Method, Target: target, Proto: "HTTP/1.1", Headers: hdr}
}

// h1ResponseFieldsToH2 lowercases names and drops connection-specific fields.
func h1ResponseFieldsToH2(h h1.Headers) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, len(h))
	for _, f := range h {
		name := h1.LowerName(f.Name)
		switch name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer":
			continue
		}
		if h.HasToken("Connection", name) {
			continue
		}
		out = append(out, hpack.HeaderField{Name: name, Value: f.Value})
	}
	return out
}

func hasField(h []hpack.HeaderField, name string) bool {
	for _, f := range h {
		if f.Name == name {
			return true
		}
	}
	return false
}

// copyChunkedFrom writes r to w in the chunked transfer coding.
func copyChunkedFrom(w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			head := strconv.AppendInt(nil, int64(n), 16)
			head = append(head, "\r\n"...)
			if _, werr := w.Write(head); werr != nil {
				return total, werr
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
			if _, werr := io.WriteString(w, "\r\n"); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			_, werr := io.WriteString(w, "0\r\n\r\n")
			return total, werr
		}
		if err != nil {
			return total, err
		}
	}
}
