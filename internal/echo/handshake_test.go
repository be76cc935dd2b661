package echo

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func upgradeRequest(mutate func(r *http.Request)) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "keep-alive, Upgrade")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if mutate != nil {
		mutate(r)
	}
	return r
}

func TestCheckHandshake(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(r *http.Request)
		status int
		reason string
	}{
		{"valid", nil, 0, ""},
		{"plain GET", func(r *http.Request) { r.Header.Del("Upgrade") }, 426, "WebSocket endpoint"},
		{"other upgrade", func(r *http.Request) { r.Header.Set("Upgrade", "h2c") }, 426, "WebSocket endpoint"},
		{"POST", func(r *http.Request) { r.Method = http.MethodPost }, 400, "method is POST"},
		{"HTTP/1.0", func(r *http.Request) { r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0 }, 400, "HTTP/1.0"},
		{"no Connection upgrade", func(r *http.Request) { r.Header.Set("Connection", "keep-alive") }, 400, "Connection header"},
		{"wrong version", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }, 400, `Sec-WebSocket-Version is "8"`},
		{"missing version", func(r *http.Request) { r.Header.Del("Sec-WebSocket-Version") }, 400, "Sec-WebSocket-Version"},
		{"missing key", func(r *http.Request) { r.Header.Del("Sec-WebSocket-Key") }, 400, "missing Sec-WebSocket-Key"},
		{"two keys", func(r *http.Request) { r.Header.Add("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==") }, 400, "more than one"},
		{"short key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "c2hvcnQ=") }, 400, "not 16 bytes"},
		{"bad base64 key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "!!!") }, 400, "not 16 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkHandshake(upgradeRequest(tt.mutate))
			if tt.status == 0 {
				if got != nil {
					t.Fatalf("checkHandshake = %+v, want nil", got)
				}
				return
			}
			if got == nil || got.status != tt.status || !strings.Contains(got.reason, tt.reason) {
				t.Fatalf("checkHandshake = %+v, want status %d and a reason containing %q", got, tt.status, tt.reason)
			}
		})
	}
}

func TestWriteHandshakeError(t *testing.T) {
	r := upgradeRequest(func(r *http.Request) { r.Header.Del("Upgrade") })
	w := httptest.NewRecorder()
	writeHandshakeError(w, r, checkHandshake(r))
	if w.Code != 426 || w.Header().Get("Upgrade") != "websocket" || !strings.HasPrefix(w.Body.String(), "426 Upgrade Required: ") {
		t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body.String())
	}

	r = upgradeRequest(func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "7") })
	w = httptest.NewRecorder()
	writeHandshakeError(w, r, checkHandshake(r))
	if w.Code != 400 || w.Header().Get("Sec-WebSocket-Version") != "13" {
		t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body.String())
	}
}

func TestSelectSubprotocol(t *testing.T) {
	tests := []struct {
		offered   []string
		supported []string
		want      string
	}{
		{nil, []string{"chat"}, ""},
		{[]string{"chat"}, nil, ""},
		{[]string{"b, a"}, []string{"a", "b"}, "b"}, // the client's order wins
		{[]string{"x", "a"}, []string{"a", "b"}, "a"},
		{[]string{"Chat"}, []string{"chat"}, ""}, // tokens compare exactly
		{[]string{"x,y"}, []string{"z"}, ""},
	}
	for _, tt := range tests {
		r := upgradeRequest(func(r *http.Request) {
			for _, o := range tt.offered {
				r.Header.Add("Sec-WebSocket-Protocol", o)
			}
		})
		if got := selectSubprotocol(r, tt.supported); got != tt.want {
			t.Errorf("selectSubprotocol(%q, %q) = %q, want %q", tt.offered, tt.supported, got, tt.want)
		}
	}
}
