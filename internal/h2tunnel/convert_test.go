package h2tunnel

import (
	"encoding/base64"
	"errors"
	"reflect"
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/wsmesh/wsmesh/internal/h1"
)

func TestAcceptKey(t *testing.T) {
	// RFC 6455 §1.3. (The brief quoted "s3pPLMBiTxaQ9kYGzzZqDJ+xOo="; the
	// RFC's value, which SHA-1 produces, is the one below.)
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %q", got)
	}
}

func hf(kv ...string) []hpack.HeaderField {
	var out []hpack.HeaderField
	for i := 0; i < len(kv); i += 2 {
		out = append(out, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func hh(kv ...string) h1.Headers {
	var out h1.Headers
	for i := 0; i < len(kv); i += 2 {
		out = append(out, h1.Header{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestUpgradeToConnect(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *h1.Request
		want *Request
		err  error
	}{
		{
			name: "browser upgrade",
			in: &h1.Request{Method: "GET", Target: "/chat?room=1", Proto: "HTTP/1.1", Headers: hh(
				"Host", "echo.default.svc:8080",
				"Upgrade", "websocket",
				"Connection", "keep-alive, Upgrade, X-Hop",
				"X-Hop", "1",
				"Keep-Alive", "timeout=5",
				"Proxy-Connection", "keep-alive",
				"Content-Length", "0",
				"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==",
				"Sec-WebSocket-Version", "13",
				"Sec-WebSocket-Protocol", "chat, superchat",
				"Sec-WebSocket-Extensions", "permessage-deflate",
				"Origin", "http://example.com",
				"Cookie", "a=1",
			)},
			want: &Request{Method: "CONNECT", Protocol: "websocket", Scheme: "http", Authority: "echo.default.svc:8080", Path: "/chat?room=1",
				Header: hf(
					"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==",
					"sec-websocket-version", "13",
					"sec-websocket-protocol", "chat, superchat",
					"sec-websocket-extensions", "permessage-deflate",
					"origin", "http://example.com",
					"cookie", "a=1",
				)},
		},
		{
			name: "absolute-form target",
			in: &h1.Request{Method: "GET", Target: "http://svc:80/ws", Headers: hh(
				"Host", "ignored", "Upgrade", "WebSocket", "Connection", "upgrade", "Sec-WebSocket-Version", "13")},
			want: &Request{Method: "CONNECT", Protocol: "websocket", Scheme: "http", Authority: "svc:80", Path: "/ws",
				Header: hf("sec-websocket-version", "13")},
		},
		{
			name: "not an upgrade",
			in:   &h1.Request{Method: "GET", Target: "/", Headers: hh("Host", "x")},
			err:  ErrNotWebSocketUpgrade,
		},
		{
			name: "no host",
			in:   &h1.Request{Method: "GET", Target: "/", Headers: hh("Upgrade", "websocket", "Connection", "Upgrade")},
			err:  ErrBadTarget,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UpgradeToConnect(tc.in, "http")
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestRequestToH2(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *h1.Request
		want *Request
	}{
		{
			name: "GET",
			in:   &h1.Request{Method: "GET", Target: "/a?b", Headers: hh("Host", "svc", "Accept", "*/*", "TE", "trailers", "Connection", "close")},
			want: &Request{Method: "GET", Scheme: "http", Authority: "svc", Path: "/a?b", Header: hf("accept", "*/*", "te", "trailers"), NoBody: true},
		},
		{
			name: "POST content-length",
			in:   &h1.Request{Method: "POST", Target: "/p", Headers: hh("Host", "svc", "Content-Length", "5", "TE", "gzip")},
			want: &Request{Method: "POST", Scheme: "http", Authority: "svc", Path: "/p", Header: hf("content-length", "5")},
		},
		{
			name: "POST chunked drops content-length",
			in:   &h1.Request{Method: "POST", Target: "/p", Headers: hh("Host", "svc", "Transfer-Encoding", "chunked", "Content-Length", "5")},
			want: &Request{Method: "POST", Scheme: "http", Authority: "svc", Path: "/p", Header: hf()},
		},
		{
			name: "OPTIONS *",
			in:   &h1.Request{Method: "OPTIONS", Target: "*", Headers: hh("Host", "svc")},
			want: &Request{Method: "OPTIONS", Scheme: "http", Authority: "svc", Path: "*", Header: hf(), NoBody: true},
		},
		{
			name: "CONNECT",
			in:   &h1.Request{Method: "CONNECT", Target: "db:5432", Headers: hh("Host", "db:5432")},
			want: &Request{Method: "CONNECT", Authority: "db:5432", Header: hf()},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RequestToH2(tc.in, "http")
			if err != nil {
				t.Fatal(err)
			}
			if got.Header == nil {
				got.Header = hf()
			}
			if tc.want.Header == nil {
				tc.want.Header = hf()
			}
			if len(got.Header) == 0 && len(tc.want.Header) == 0 {
				got.Header, tc.want.Header = nil, nil
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestConnectToUpgrade(t *testing.T) {
	// A sidecar peer passes the application's key through.
	r := &Request{Method: "CONNECT", Protocol: "websocket", Scheme: "http", Authority: "svc:8080", Path: "/ws",
		Header: hf("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version", "13",
			"sec-websocket-protocol", "chat", "sec-websocket-extensions", "permessage-deflate",
			"cookie", "a=1", "cookie", "b=2", "user-agent", "x", "content-length", "0")}
	got, accept, err := ConnectToUpgrade(r)
	if err != nil {
		t.Fatal(err)
	}
	want := &h1.Request{Method: "GET", Target: "/ws", Proto: "HTTP/1.1", Headers: hh(
		"Host", "svc:8080", "Upgrade", "websocket", "Connection", "Upgrade",
		"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version", "13",
		"Sec-WebSocket-Protocol", "chat", "Sec-WebSocket-Extensions", "permessage-deflate",
		"Cookie", "a=1; b=2", "User-Agent", "x")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if accept != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("accept %q", accept)
	}

	// A native RFC 8441 client sends no key: one is generated.
	r = &Request{Method: "CONNECT", Protocol: "websocket", Scheme: "https", Authority: "svc", Path: "/",
		Header: hf("sec-websocket-version", "13")}
	got, accept, err = ConnectToUpgrade(r)
	if err != nil {
		t.Fatal(err)
	}
	key := got.Headers.Get("Sec-WebSocket-Key")
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		t.Fatalf("generated key %q", key)
	}
	if accept != AcceptKey(key) {
		t.Errorf("accept %q for key %q", accept, key)
	}
	if _, _, err := ConnectToUpgrade(&Request{Method: "GET", Path: "/"}); !errors.Is(err, ErrNotExtendedConnect) {
		t.Errorf("GET: %v", err)
	}
}

func TestUpgradeResponseToH2(t *testing.T) {
	accept := AcceptKey("dGhlIHNhbXBsZSBub25jZQ==")
	resp := &h1.Response{Proto: "HTTP/1.1", Status: 101, Headers: hh(
		"Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Accept", accept,
		"Sec-WebSocket-Protocol", "chat", "Sec-WebSocket-Extensions", "permessage-deflate", "X-App", "1")}
	status, hdr, err := UpgradeResponseToH2(resp, accept, true)
	if err != nil || status != 200 {
		t.Fatal(status, err)
	}
	if want := hf("sec-websocket-protocol", "chat", "sec-websocket-extensions", "permessage-deflate", "x-app", "1"); !reflect.DeepEqual(hdr, want) {
		t.Errorf("generated key: %v", hdr)
	}
	_, hdr, _ = UpgradeResponseToH2(resp, accept, false)
	if v, _ := fieldValue(hdr, "sec-websocket-accept"); v != accept {
		t.Errorf("passed-through key must keep accept: %v", hdr)
	}
	if _, _, err := UpgradeResponseToH2(resp, AcceptKey("other"), true); !errors.Is(err, ErrBadAccept) {
		t.Errorf("wrong accept: %v", err)
	}
	status, hdr, err = UpgradeResponseToH2(&h1.Response{Status: 403, Headers: hh("Content-Length", "9", "Connection", "close")}, accept, true)
	if err != nil || status != 403 || !reflect.DeepEqual(hdr, hf("content-length", "9")) {
		t.Errorf("403: %d %v %v", status, hdr, err)
	}
}

func TestConnectResponseToH1(t *testing.T) {
	// Envoy answers 200 without sec-websocket-accept; HAProxy/nghttpx
	// compute one. Either way the app gets the accept for its own key.
	for _, hdr := range [][]hpack.HeaderField{
		hf("sec-websocket-protocol", "chat"),
		hf("sec-websocket-protocol", "chat", "sec-websocket-accept", "bogus"),
	} {
		got, err := ConnectResponseToH1(200, hdr, "dGhlIHNhbXBsZSBub25jZQ==")
		if err != nil {
			t.Fatal(err)
		}
		want := &h1.Response{Proto: "HTTP/1.1", Status: 101, Reason: "Switching Protocols", Headers: hh(
			"Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
			"Sec-WebSocket-Protocol", "chat")}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got  %+v\nwant %+v", got, want)
		}
	}
	got, err := ConnectResponseToH1(404, hf("content-type", "text/plain"), "k")
	if err != nil || got.Status != 404 || got.Reason != "Not Found" || got.Headers.Get("Content-Type") != "text/plain" {
		t.Errorf("404: %+v %v", got, err)
	}
}

func TestResponseToH1(t *testing.T) {
	got := ResponseToH1(200, hf("content-type", "text/html", "set-cookie", "a=1", "set-cookie", "b=2", "x-request-id", "7"))
	want := &h1.Response{Proto: "HTTP/1.1", Status: 200, Reason: "OK", Headers: hh(
		"Content-Type", "text/html", "Set-Cookie", "a=1", "Set-Cookie", "b=2", "X-Request-Id", "7")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

// TestConvertRoundTrip: H1 upgrade → CONNECT → H1 upgrade keeps the
// handshake, and the answers convert back with a valid accept.
func TestConvertRoundTrip(t *testing.T) {
	app := &h1.Request{Method: "GET", Target: "/ws", Proto: "HTTP/1.1", Headers: hh(
		"Host", "svc", "Upgrade", "websocket", "Connection", "Upgrade",
		"Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw==", "Sec-WebSocket-Version", "13")}
	c, err := UpgradeToConnect(app, "http")
	if err != nil {
		t.Fatal(err)
	}
	inReq, accept, err := ConnectToUpgrade(c)
	if err != nil {
		t.Fatal(err)
	}
	if inReq.Headers.Get("Sec-WebSocket-Key") != "x3JJHMbDL1EzLkh9GBhXDw==" || accept != "HSmrc0sMlYUkAGmm5OPpG2HaGWk=" {
		t.Fatalf("inbound %+v accept %q", inReq, accept)
	}
	appResp := &h1.Response{Status: 101, Headers: hh("Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Accept", accept)}
	status, hdr, err := UpgradeResponseToH2(appResp, accept, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ConnectResponseToH1(status, hdr, app.Headers.Get("Sec-WebSocket-Key"))
	if err != nil || out.Status != 101 || out.Headers.Get("Sec-WebSocket-Accept") != "HSmrc0sMlYUkAGmm5OPpG2HaGWk=" {
		t.Fatalf("outbound %+v %v", out, err)
	}
}
