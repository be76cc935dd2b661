package h2tunnel

import (
	"bufio"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/wsmesh/wsmesh/internal/h1"
)

// BenchmarkUpgradeConversion is the header work of one WebSocket through
// the tunnel, as the two sidecars do it: the client sidecar parses the
// app's HTTP/1.1 upgrade and turns it into an extended CONNECT; the server
// sidecar turns that back into an HTTP/1.1 upgrade for the app and writes
// it, and turns the app's 101 into a 200, which the client sidecar turns
// back into a 101 for the app.
func BenchmarkUpgradeConversion(b *testing.B) {
	const head = "GET /chat?room=1 HTTP/1.1\r\nHost: websockets-server.default.svc.cluster.local:8080\r\n" +
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
		"User-Agent: Python/3.11 websockets/10.4\r\n\r\n"
	sr := strings.NewReader(head)
	br := bufio.NewReader(sr)
	var out []byte
	b.ReportAllocs()
	for range b.N {
		sr.Reset(head)
		br.Reset(sr)
		req, err := h1.ReadRequest(br, h1.Limits{MaxHeadBytes: 8192})
		if err != nil {
			b.Fatal(err)
		}
		creq, err := UpgradeToConnect(req, "http")
		if err != nil {
			b.Fatal(err)
		}
		back, accept, err := ConnectToUpgrade(creq)
		if err != nil {
			b.Fatal(err)
		}
		out = h1.AppendRequest(out[:0], back)
		resp := &h1.Response{Status: 101, Headers: h1.Headers{
			{Name: "Upgrade", Value: "websocket"}, {Name: "Connection", Value: "Upgrade"},
			{Name: "Sec-WebSocket-Accept", Value: accept},
		}}
		status, fields, err := UpgradeResponseToH2(resp, accept, false)
		if err != nil || status != 200 {
			b.Fatal(status, err)
		}
		if _, err := ConnectResponseToH1(status, append([]hpack.HeaderField(nil), fields...), req.Headers.Get("Sec-WebSocket-Key")); err != nil {
			b.Fatal(err)
		}
	}
}
