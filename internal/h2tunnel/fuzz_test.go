package h2tunnel

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/wsmesh/wsmesh/internal/h1"
)

// FuzzUpgradeConversion checks the header conversions of both tunnel ends
// on arbitrary HTTP/1.1 heads: no panic, and a WebSocket upgrade survives
// H1 -> extended CONNECT -> H1 with its key, path and authority, and the
// answer path computes the Accept for the client's key.
func FuzzUpgradeConversion(f *testing.F) {
	f.Add("GET /chat?x=1 HTTP/1.1\r\nHost: a.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, v2\r\n\r\n")
	f.Add("GET http://b/x HTTP/1.1\r\nHost: b\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\nsec-websocket-key: abc\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n")
	f.Add("POST /p HTTP/1.1\r\nHost: c\r\nContent-Length: 3\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\n\r\n")
	f.Fuzz(func(t *testing.T, head string) {
		req, err := h1.ReadRequest(bufio.NewReader(strings.NewReader(head)), h1.Limits{MaxHeadBytes: 8192})
		if err != nil {
			return
		}
		if !h1.IsWebSocketUpgrade(req) {
			if r2, err := RequestToH2(req, "http"); err == nil {
				for _, f := range r2.Header {
					if f.Name != strings.ToLower(f.Name) || f.Name == "connection" || f.Name == "upgrade" || f.Name == "host" {
						t.Fatalf("connection-specific or uppercase field %q in %+v", f.Name, r2)
					}
				}
			}
			return
		}
		creq, err := UpgradeToConnect(req, "http")
		if err != nil {
			return
		}
		for _, f := range creq.Header {
			if f.Name == "content-length" || f.Name == "upgrade" || f.Name == "connection" {
				t.Fatalf("%q must not be sent on an extended CONNECT", f.Name)
			}
		}
		back, accept, err := ConnectToUpgrade(creq)
		if err != nil {
			t.Fatalf("our own extended CONNECT refused: %v (%+v)", err, creq)
		}
		key := req.Headers.Get("Sec-WebSocket-Key")
		if key != "" && (back.Headers.Get("Sec-WebSocket-Key") != key || accept != AcceptKey(key)) {
			t.Fatalf("key not carried: %q -> %q", key, back.Headers.Get("Sec-WebSocket-Key"))
		}
		if !h1.IsWebSocketUpgrade(back) || back.Headers.Get("Host") != creq.Authority {
			t.Fatalf("converted back to a non-upgrade: %+v", back)
		}
		if _, err := h1.ReadRequest(bufio.NewReader(bytes.NewReader(h1.AppendRequest(nil, back))), h1.Limits{MaxHeadBytes: 1 << 20}); err != nil {
			t.Fatalf("converted request does not parse: %v", err)
		}
		if key != "" {
			resp, err := ConnectResponseToH1(200, []hpack.HeaderField{{Name: "sec-websocket-protocol", Value: "chat"}}, key)
			if err != nil || resp.Status != 101 || resp.Headers.Get("Sec-WebSocket-Accept") != AcceptKey(key) {
				t.Fatalf("answer: %+v %v", resp, err)
			}
		}
	})
}

// FuzzServerFrames feeds arbitrary bytes after the client preface to the
// HTTP/2 server: it must neither panic nor hang, whatever arrives.
func FuzzServerFrames(f *testing.F) {
	var seed bytes.Buffer
	fr := http2.NewFramer(&seed, nil)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "CONNECT"}, {Name: ":protocol", Value: "websocket"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/"}, {Name: ":authority", Value: "a"}} {
		_ = enc.WriteField(hf)
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	_ = fr.WriteData(1, false, []byte("hello"))
	_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := NewServer(ServerConfig{AllowConnect: true, Handler: func(st *ServerStream) {
			_ = st.WriteResponse(200, nil, false)
			_, _ = io.Copy(st, st)
		}})
		client, server := net.Pipe()
		done := make(chan struct{})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		go func() {
			defer close(done)
			_ = srv.ServeConn(ctx, server)
		}()
		go io.Copy(io.Discard, client) // whatever the server answers
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = client.Write([]byte(http2.ClientPreface))
		_, _ = client.Write(data)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server did not end after the client went away")
		}
		_ = srv.Close()
	})
}
