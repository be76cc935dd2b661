package h1

import "strings"

// titleNames are field names common in WebSocket handshakes and forwarded
// requests, lowercase (as HTTP/2 spells them) to Title-Case. Converting
// them between the two spellings returns these constants instead of
// allocating a string per field per request.
var titleNames = map[string]string{
	"accept":                   "Accept",
	"accept-encoding":          "Accept-Encoding",
	"accept-language":          "Accept-Language",
	"authorization":            "Authorization",
	"cache-control":            "Cache-Control",
	"connection":               "Connection",
	"content-length":           "Content-Length",
	"content-type":             "Content-Type",
	"cookie":                   "Cookie",
	"date":                     "Date",
	"host":                     "Host",
	"origin":                   "Origin",
	"pragma":                   "Pragma",
	"sec-websocket-accept":     "Sec-WebSocket-Accept",
	"sec-websocket-extensions": "Sec-WebSocket-Extensions",
	"sec-websocket-key":        "Sec-WebSocket-Key",
	"sec-websocket-protocol":   "Sec-WebSocket-Protocol",
	"sec-websocket-version":    "Sec-WebSocket-Version",
	"server":                   "Server",
	"upgrade":                  "Upgrade",
	"user-agent":               "User-Agent",
	"x-forwarded-for":          "X-Forwarded-For",
	"x-forwarded-proto":        "X-Forwarded-Proto",
	"x-request-id":             "X-Request-Id",
}

// lowerNames maps each key of titleNames to itself, so that a lookup
// returns the constant.
var lowerNames = func() map[string]string {
	m := make(map[string]string, len(titleNames))
	for k := range titleNames {
		m[k] = k
	}
	return m
}()

// maxCommonName is the length of the longest name in titleNames.
const maxCommonName = len("sec-websocket-extensions")

// LowerName returns name in lowercase, the spelling HTTP/2 requires. It
// allocates only for an uncommon name that has uppercase letters.
func LowerName(name string) string {
	if len(name) > maxCommonName {
		return strings.ToLower(name)
	}
	var buf [maxCommonName]byte
	b := lowerInto(&buf, name)
	if string(b) == name {
		return name
	}
	if k, ok := lowerNames[string(b)]; ok {
		return k
	}
	return string(b)
}

// lowerInto writes name, at most maxCommonName bytes, in ASCII lowercase
// into buf and returns that part of buf.
func lowerInto(buf *[maxCommonName]byte, name string) []byte {
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return b
}

// TitleName spells a lowercase field name in Title-Case (each letter after
// a hyphen, and the first, in uppercase), with the RFC 6455 spellings of
// the WebSocket handshake fields. It allocates only for uncommon names.
func TitleName(lower string) string {
	if t, ok := titleNames[lower]; ok {
		return t
	}
	b := []byte(lower)
	up := true
	for i, c := range b {
		if up && 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
		up = c == '-'
	}
	return string(b)
}
