package h2tunnel

import (
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestRequestValidation sends requests one by one on a raw connection and
// checks which are served and which are reset (RFC 9113 §8, RFC 8441).
func TestRequestValidation(t *testing.T) {
	f := func(kv ...string) []hpack.HeaderField { return hf(kv...) }
	for _, allow := range []bool{true, false} {
		ts := startServer(t, ServerConfig{AllowConnect: allow, Handler: func(st *ServerStream) {
			st.WriteResponse(200, nil, true)
		}})
		r := dialRaw(t, ts.addr)
		id := uint32(1)
		for _, tc := range []struct {
			name   string
			fields []hpack.HeaderField
			ok     bool
		}{
			{"extended CONNECT", f(":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws", ":authority", "a"), allow},
			{"extended CONNECT without :path", f(":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "a"), false},
			{"extended CONNECT without :scheme", f(":method", "CONNECT", ":protocol", "websocket", ":path", "/", ":authority", "a"), false},
			{":protocol on GET", f(":method", "GET", ":protocol", "websocket", ":scheme", "http", ":path", "/", ":authority", "a"), false},
			{"plain CONNECT", f(":method", "CONNECT", ":authority", "db:5432"), true},
			{"plain CONNECT with :path", f(":method", "CONNECT", ":authority", "db:5432", ":path", "/"), false},
			{"plain CONNECT without :authority", f(":method", "CONNECT"), false},
			{"GET", f(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a"), true},
			{"GET without :path", f(":method", "GET", ":scheme", "http", ":authority", "a"), false},
			{"uppercase field", f(":method", "GET", ":scheme", "http", ":path", "/", "X-Up", "1"), false},
			{"connection field", f(":method", "GET", ":scheme", "http", ":path", "/", "connection", "close"), false},
			{"upgrade field", f(":method", "GET", ":scheme", "http", ":path", "/", "upgrade", "websocket"), false},
			{"keep-alive field", f(":method", "GET", ":scheme", "http", ":path", "/", "keep-alive", "1"), false},
			{"transfer-encoding", f(":method", "GET", ":scheme", "http", ":path", "/", "transfer-encoding", "chunked"), false},
			{"te: gzip", f(":method", "GET", ":scheme", "http", ":path", "/", "te", "gzip"), false},
			{"te: trailers", f(":method", "GET", ":scheme", "http", ":path", "/", "te", "trailers"), true},
			{"pseudo after regular", f(":method", "GET", ":scheme", "http", "x", "1", ":path", "/"), false},
			{"duplicate :path", f(":method", "GET", ":scheme", "http", ":path", "/", ":path", "/"), false},
			{":status in request", f(":method", "GET", ":scheme", "http", ":path", "/", ":status", "200"), false},
		} {
			r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(tc.fields...), EndStream: true, EndHeaders: true})
			fr := r.next(func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.MetaHeadersFrame:
					return f.StreamID == id
				case *http2.RSTStreamFrame:
					return f.StreamID == id
				}
				return false
			})
			_, served := fr.(*http2.MetaHeadersFrame)
			if served != tc.ok {
				t.Errorf("AllowConnect=%v %s: served=%v (%v)", allow, tc.name, served, fr)
			}
			if rst, ok := fr.(*http2.RSTStreamFrame); ok && rst.ErrCode != http2.ErrCodeProtocol {
				t.Errorf("AllowConnect=%v %s: RST_STREAM %v, want PROTOCOL_ERROR", allow, tc.name, rst.ErrCode)
			}
			id += 2
		}
	}
}
