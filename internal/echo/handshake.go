package echo

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
)

// handshakeError is why a request to the WebSocket endpoint was not upgraded:
// the HTTP status to answer with and a one-line explanation, used both as the
// response body and in the log line.
type handshakeError struct {
	status int
	reason string
}

// checkHandshake validates an opening handshake against RFC 6455 section
// 4.2.1 before it is handed to the WebSocket library, so that every refusal
// has a status and body chosen here: 426 when the request is not a WebSocket
// upgrade at all, 400 when it is one but is malformed. It returns nil when
// the request may be upgraded.
func checkHandshake(r *http.Request) *handshakeError {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		return &handshakeError{http.StatusUpgradeRequired,
			"this is a WebSocket endpoint: connect with a WebSocket client (HTTP/1.1 GET with Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Version: 13 and Sec-WebSocket-Key)"}
	}
	if !r.ProtoAtLeast(1, 1) {
		return &handshakeError{http.StatusBadRequest,
			fmt.Sprintf("malformed WebSocket handshake: protocol is %s, must be HTTP/1.1 or later", r.Proto)}
	}
	if r.Method != http.MethodGet {
		return &handshakeError{http.StatusBadRequest,
			fmt.Sprintf("malformed WebSocket handshake: method is %s, must be GET", r.Method)}
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") {
		return &handshakeError{http.StatusBadRequest,
			fmt.Sprintf("malformed WebSocket handshake: Connection header %q does not contain Upgrade", r.Header.Get("Connection"))}
	}
	if v := r.Header.Values("Sec-WebSocket-Version"); len(v) != 1 || strings.TrimSpace(v[0]) != "13" {
		return &handshakeError{http.StatusBadRequest,
			fmt.Sprintf("malformed WebSocket handshake: Sec-WebSocket-Version is %q, only 13 is supported", strings.Join(v, ", "))}
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	switch {
	case len(keys) == 0:
		return &handshakeError{http.StatusBadRequest, "malformed WebSocket handshake: missing Sec-WebSocket-Key"}
	case len(keys) > 1:
		return &handshakeError{http.StatusBadRequest, "malformed WebSocket handshake: more than one Sec-WebSocket-Key"}
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return &handshakeError{http.StatusBadRequest,
			fmt.Sprintf("malformed WebSocket handshake: Sec-WebSocket-Key %q is not 16 bytes in base64", keys[0])}
	}
	return nil
}

// writeHandshakeError answers a refused handshake. A 426 carries the
// Upgrade and Connection fields RFC 9110 asks for; a refused version carries
// the Sec-WebSocket-Version the server speaks (RFC 6455 section 4.4).
func writeHandshakeError(w http.ResponseWriter, r *http.Request, e *handshakeError) {
	h := w.Header()
	switch {
	case e.status == http.StatusUpgradeRequired:
		h.Set("Upgrade", "websocket")
		h.Set("Connection", "Upgrade")
	case strings.Contains(e.reason, "Sec-WebSocket-Version"):
		h.Set("Sec-WebSocket-Version", "13")
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, "%d %s: %s\n", e.status, http.StatusText(e.status), e.reason)
	}
}

// selectSubprotocol returns the first subprotocol the client offered (in
// the client's order) that is also in supported, or "" when there is none.
// Subprotocol names are compared exactly, as RFC 6455 tokens are.
func selectSubprotocol(r *http.Request, supported []string) string {
	for _, offered := range headerTokens(r.Header, "Sec-WebSocket-Protocol") {
		for _, s := range supported {
			if offered == s {
				return offered
			}
		}
	}
	return ""
}

// headerTokens splits every value of the comma-separated header field name
// into trimmed, non-empty tokens.
func headerTokens(h http.Header, name string) []string {
	var out []string
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// headerHasToken reports whether the comma-separated header field name has
// token among its values, ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, t := range headerTokens(h, name) {
		if strings.EqualFold(t, token) {
			return true
		}
	}
	return false
}
