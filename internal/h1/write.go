package h1

import (
	"net/http"
	"strconv"
	"strings"
)

// canonical spells the WebSocket handshake fields as RFC 6455 does, which
// textproto's canonical form ("Sec-Websocket-Key") does not.
var canonical = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{"upgrade", "connection", "host", "sec-websocket-key", "sec-websocket-accept",
		"sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions", "origin"} {
		m[k] = titleNames[k]
	}
	return m
}()

// CanonicalName returns the RFC spelling of the handshake fields above and
// name unchanged otherwise.
func CanonicalName(name string) string {
	if len(name) <= maxCommonName {
		var buf [maxCommonName]byte
		if c, ok := canonical[string(lowerInto(&buf, name))]; ok {
			return c
		}
	}
	return name
}

// AppendRequest appends the wire form of a request head to dst.
func AppendRequest(dst []byte, r *Request) []byte {
	proto := r.Proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	dst = append(dst, r.Method...)
	dst = append(dst, ' ')
	dst = append(dst, r.Target...)
	dst = append(dst, ' ')
	dst = append(dst, proto...)
	dst = append(dst, "\r\n"...)
	return appendFields(dst, r.Headers)
}

// AppendResponse appends the wire form of a response head to dst.
func AppendResponse(dst []byte, r *Response) []byte {
	proto := r.Proto
	if proto == "" {
		proto = "HTTP/1.1"
	}
	dst = append(dst, proto...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = append(dst, ' ')
	reason := r.Reason
	if reason == "" {
		reason = StatusText(r.Status)
	}
	dst = append(dst, reason...)
	dst = append(dst, "\r\n"...)
	return appendFields(dst, r.Headers)
}

func appendFields(dst []byte, h Headers) []byte {
	for _, f := range h {
		dst = append(dst, CanonicalName(f.Name)...)
		dst = append(dst, ": "...)
		dst = append(dst, f.Value...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// hopByHop are the connection-specific fields of RFC 9110 §7.6.1 that a
// proxy never forwards.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "TE", "Transfer-Encoding", "Upgrade", "Trailer"}

// RemoveHopByHop deletes connection-specific fields and every field the
// Connection field names. It keeps Transfer-Encoding when keepTE is set (the
// body is forwarded with its framing unchanged).
func RemoveHopByHop(h *Headers, keepTE bool) {
	for _, v := range h.Values("Connection") {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				if keepTE && strings.EqualFold(t, "Transfer-Encoding") {
					continue
				}
				h.Del(t)
			}
		}
	}
	for _, n := range hopByHop {
		if keepTE && n == "Transfer-Encoding" {
			continue
		}
		h.Del(n)
	}
}

// IsWebSocketUpgrade reports whether r asks for an RFC 6455 upgrade.
func IsWebSocketUpgrade(r *Request) bool {
	return r.Method == "GET" && r.Headers.HasToken("Connection", "upgrade") && r.Headers.HasToken("Upgrade", "websocket")
}

// StatusText is the reason phrase wsmesh writes for a status code.
func StatusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(code)
}
