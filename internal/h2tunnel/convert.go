package h2tunnel

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/net/http2/hpack"

	"github.com/wsmesh/wsmesh/internal/h1"
)

// websocketGUID is the fixed string of RFC 6455 §1.3 mixed into the accept
// hash.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Errors returned by the conversion helpers.
var (
	// ErrNotWebSocketUpgrade: the HTTP/1.1 request is not a WebSocket upgrade.
	ErrNotWebSocketUpgrade = errors.New("h2tunnel: not a WebSocket upgrade request")
	// ErrNotExtendedConnect: the HTTP/2 request is not an RFC 8441 extended CONNECT for websocket.
	ErrNotExtendedConnect = errors.New("h2tunnel: not an extended CONNECT for websocket")
	// ErrBadAccept: the application's Sec-WebSocket-Accept does not match the key.
	ErrBadAccept = errors.New("h2tunnel: Sec-WebSocket-Accept does not match Sec-WebSocket-Key")
	// ErrBadTarget: the request-target cannot be expressed as HTTP/2 pseudo-header fields.
	ErrBadTarget = errors.New("h2tunnel: request-target not convertible to HTTP/2")
)

// AcceptKey returns the Sec-WebSocket-Accept value for a Sec-WebSocket-Key
// (RFC 6455 §4.2.2): base64(SHA-1(key + GUID)).
func AcceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(websocketGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.EncodeToString(h.Sum(sum[:0]))
}

// connectionSpecific reports whether an HTTP/1.1 field must never cross into
// HTTP/2 (RFC 9113 §8.2.2) or is replaced by pseudo-header fields. te is
// handled by the callers.
func connectionSpecific(lower string) bool {
	switch lower {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings", "trailer":
		return true
	}
	return false
}

// splitTarget turns an origin-form or absolute-form request-target into
// :path and, for absolute-form, :authority.
func splitTarget(target string) (path, authority string, err error) {
	switch {
	case target == "*":
		return "*", "", nil
	case strings.HasPrefix(target, "/"):
		return target, "", nil
	}
	i := strings.Index(target, "://")
	if i <= 0 {
		return "", "", fmt.Errorf("%w: %q", ErrBadTarget, target)
	}
	rest := target[i+3:]
	j := strings.IndexAny(rest, "/?")
	if j < 0 {
		return "/", rest, nil
	}
	authority = rest[:j]
	path = rest[j:]
	if path[0] == '?' {
		path = "/" + path
	}
	return path, authority, nil
}

// h1FieldsToH2 copies the fields of h that may cross into HTTP/2, lowercased.
// It drops connection-specific fields, fields named by Connection, and the
// names in drop. te survives only as "trailers" when keepTE is set.
func h1FieldsToH2(h h1.Headers, keepTE bool, drop ...string) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, len(h))
outer:
	for _, f := range h {
		name := h1.LowerName(f.Name)
		if connectionSpecific(name) || h.HasToken("Connection", name) {
			continue
		}
		for _, d := range drop {
			if name == d {
				continue outer
			}
		}
		if name == "te" {
			if !keepTE || !strings.EqualFold(strings.TrimSpace(f.Value), "trailers") {
				continue
			}
			out = append(out, hpack.HeaderField{Name: "te", Value: "trailers"})
			continue
		}
		out = append(out, hpack.HeaderField{Name: name, Value: f.Value})
	}
	return out
}

// UpgradeToConnect converts an HTTP/1.1 WebSocket upgrade request into an
// RFC 8441 extended CONNECT: :method CONNECT, :protocol websocket, :scheme,
// :path from the request-target and :authority from Host (or from an
// absolute-form target). Upgrade, Connection and every field it names,
// Keep-Alive, Proxy-Connection, Transfer-Encoding, TE, Content-Length and
// Host are dropped; the Sec-WebSocket-* fields are kept, lowercased.
func UpgradeToConnect(r *h1.Request, scheme string) (*Request, error) {
	if !h1.IsWebSocketUpgrade(r) {
		return nil, ErrNotWebSocketUpgrade
	}
	path, authority, err := splitTarget(r.Target)
	if err != nil {
		return nil, err
	}
	if path == "*" {
		return nil, fmt.Errorf("%w: %q", ErrBadTarget, r.Target)
	}
	if authority == "" {
		authority = r.Headers.Get("Host")
	}
	if authority == "" {
		return nil, fmt.Errorf("%w: no Host", ErrBadTarget)
	}
	if scheme == "" {
		scheme = "http"
	}
	return &Request{
		Method:    "CONNECT",
		Protocol:  "websocket",
		Scheme:    scheme,
		Authority: authority,
		Path:      path,
		Header:    h1FieldsToH2(r.Headers, false, "content-length"),
	}, nil
}

// RequestToH2 converts a plain HTTP/1.1 request head. NoBody is set when the
// head declares no body (no Transfer-Encoding and no or zero Content-Length);
// moving the body is the caller's job. A CONNECT (authority-form) becomes a
// plain HTTP/2 CONNECT carrying only :method and :authority.
func RequestToH2(r *h1.Request, scheme string) (*Request, error) {
	if r.Method == "" {
		return nil, fmt.Errorf("%w: no method", ErrBadTarget)
	}
	if scheme == "" {
		scheme = "http"
	}
	hasTE := r.Headers.Has("Transfer-Encoding")
	cl := strings.TrimSpace(r.Headers.Get("Content-Length"))
	noBody := !hasTE && (cl == "" || cl == "0")
	if r.Method == "CONNECT" {
		if r.Target == "" || strings.Contains(r.Target, "/") {
			return nil, fmt.Errorf("%w: %q", ErrBadTarget, r.Target)
		}
		return &Request{
			Method:    "CONNECT",
			Authority: r.Target,
			Header:    h1FieldsToH2(r.Headers, false, "content-length"),
			NoBody:    false,
		}, nil
	}
	path, authority, err := splitTarget(r.Target)
	if err != nil {
		return nil, err
	}
	if path == "*" && r.Method != "OPTIONS" {
		return nil, fmt.Errorf("%w: %q", ErrBadTarget, r.Target)
	}
	if authority == "" {
		authority = r.Headers.Get("Host")
	}
	var drop []string
	if hasTE {
		// Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); the
		// body length is then only known at its end.
		drop = []string{"content-length"}
	}
	return &Request{
		Method:    r.Method,
		Scheme:    scheme,
		Authority: authority,
		Path:      path,
		Header:    h1FieldsToH2(r.Headers, true, drop...),
		NoBody:    noBody,
	}, nil
}

// h2FieldsToH1 converts regular HTTP/2 fields to HTTP/1.1 ones, joining
// split cookie fields with "; " (RFC 9113 §8.2.3) and dropping
// connection-specific fields and the names in drop.
func h2FieldsToH1(hdr []hpack.HeaderField, drop ...string) h1.Headers {
	out := make(h1.Headers, 0, len(hdr)+3)
	cookieAt := -1
outer:
	for _, f := range hdr {
		if strings.HasPrefix(f.Name, ":") {
			continue
		}
		name := strings.ToLower(f.Name)
		if connectionSpecific(name) || name == "te" {
			continue
		}
		for _, d := range drop {
			if name == d {
				continue outer
			}
		}
		if name == "cookie" {
			if cookieAt >= 0 {
				out[cookieAt].Value += "; " + f.Value
				continue
			}
			cookieAt = len(out)
		}
		out = append(out, h1.Header{Name: h1.TitleName(name), Value: f.Value})
	}
	return out
}

func fieldValue(hdr []hpack.HeaderField, name string) (string, bool) {
	for _, f := range hdr {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// ConnectToUpgrade converts an inbound extended CONNECT for websocket into
// the HTTP/1.1 upgrade request the local application expects: GET with
// Host, Upgrade: websocket, Connection: Upgrade and the Sec-WebSocket-*
// fields spelled as in RFC 6455. A native RFC 8441 client sends no
// sec-websocket-key; one is then generated (16 random bytes, base64). The
// returned expectedAccept is the Sec-WebSocket-Accept the application must
// answer with, for the generated or the passed-through key.
func ConnectToUpgrade(r *Request) (*h1.Request, string, error) {
	if r.Method != "CONNECT" || !strings.EqualFold(r.Protocol, "websocket") {
		return nil, "", ErrNotExtendedConnect
	}
	if r.Path == "" || r.Authority == "" {
		return nil, "", fmt.Errorf("%w: missing :path or :authority", ErrNotExtendedConnect)
	}
	hdr := make(h1.Headers, 0, len(r.Header)+5)
	hdr = append(hdr,
		h1.Header{Name: "Host", Value: r.Authority},
		h1.Header{Name: "Upgrade", Value: "websocket"},
		h1.Header{Name: "Connection", Value: "Upgrade"},
	)
	hdr = append(hdr, h2FieldsToH1(r.Header, "content-length")...)
	key := hdr.Get("Sec-WebSocket-Key")
	if key == "" {
		var raw [16]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, "", err
		}
		key = base64.StdEncoding.EncodeToString(raw[:])
		hdr = append(hdr, h1.Header{Name: "Sec-WebSocket-Key", Value: key})
	}
	if !hdr.Has("Sec-WebSocket-Version") {
		hdr = append(hdr, h1.Header{Name: "Sec-WebSocket-Version", Value: "13"})
	}
	return &h1.Request{Method: "GET", Target: r.Path, Proto: "HTTP/1.1", Headers: hdr}, AcceptKey(key), nil
}

// h1RespFieldsToH2 converts response fields, dropping connection-specific
// ones and the names in drop.
func h1RespFieldsToH2(h h1.Headers, drop ...string) []hpack.HeaderField {
	return h1FieldsToH2(h, false, drop...)
}

// UpgradeResponseToH2 converts the application's answer to a converted
// upgrade request. A 101 becomes 200 after checking that its
// Sec-WebSocket-Accept equals expectedAccept (a mismatch is ErrBadAccept:
// answer 502); Sec-WebSocket-Accept is dropped when keyWasGenerated (a
// native RFC 8441 client expects none). Any other status passes through
// with its fields converted.
func UpgradeResponseToH2(resp *h1.Response, expectedAccept string, keyWasGenerated bool) (int, []hpack.HeaderField, error) {
	if resp.Status != 101 {
		return resp.Status, h1RespFieldsToH2(resp.Headers), nil
	}
	if !resp.Headers.HasToken("Upgrade", "websocket") {
		return 0, nil, fmt.Errorf("h2tunnel: 101 response without Upgrade: websocket")
	}
	if expectedAccept != "" && resp.Headers.Get("Sec-WebSocket-Accept") != expectedAccept {
		return 0, nil, ErrBadAccept
	}
	drop := []string{"content-length"}
	if keyWasGenerated {
		drop = append(drop, "sec-websocket-accept")
	}
	return 200, h1RespFieldsToH2(resp.Headers, drop...), nil
}

// ConnectResponseToH1 converts the answer to an outbound extended CONNECT
// into what the application's HTTP/1.1 WebSocket client expects. A 2xx
// becomes "101 Switching Protocols" with Upgrade: websocket,
// Connection: Upgrade and a Sec-WebSocket-Accept computed from clientKey
// (whatever the peer sent), keeping sec-websocket-protocol and
// sec-websocket-extensions. Any other status is converted as by
// ResponseToH1 (the caller sees Status != 101 and relays the refusal).
func ConnectResponseToH1(status int, hdr []hpack.HeaderField, clientKey string) (*h1.Response, error) {
	if status < 200 || status > 299 {
		if status < 100 || status > 999 {
			return nil, fmt.Errorf("h2tunnel: invalid status %d", status)
		}
		return ResponseToH1(status, hdr), nil
	}
	if clientKey == "" {
		return nil, fmt.Errorf("h2tunnel: no Sec-WebSocket-Key to answer")
	}
	h := make(h1.Headers, 0, len(hdr)+3)
	h = append(h,
		h1.Header{Name: "Upgrade", Value: "websocket"},
		h1.Header{Name: "Connection", Value: "Upgrade"},
		h1.Header{Name: "Sec-WebSocket-Accept", Value: AcceptKey(clientKey)},
	)
	h = append(h, h2FieldsToH1(hdr, "content-length", "sec-websocket-accept")...)
	return &h1.Response{Proto: "HTTP/1.1", Status: 101, Reason: "Switching Protocols", Headers: h}, nil
}

// ResponseToH1 converts a plain HTTP/2 response head. The body framing
// (Content-Length, chunked or close-delimited) is the caller's choice: a
// content-length field is kept as received.
func ResponseToH1(status int, hdr []hpack.HeaderField) *h1.Response {
	return &h1.Response{Proto: "HTTP/1.1", Status: status, Reason: h1.StatusText(status), Headers: h2FieldsToH1(hdr)}
}

// statusString formats a :status value without allocating for common codes.
func statusString(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 404:
		return "404"
	case 500:
		return "500"
	}
	return strconv.Itoa(code)
}
