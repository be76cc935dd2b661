// Package h2tunnel carries the application's HTTP/1.1 traffic between
// wsmesh sidecars over HTTP/2 with prior knowledge (h2c), built directly on
// golang.org/x/net/http2's Framer and hpack rather than net/http.
//
// WebSocket upgrades ride as RFC 8441 extended CONNECT streams (:method
// CONNECT, :protocol websocket); plain requests ride as ordinary HTTP/2
// streams. The client side is a Pool of connections per upstream endpoint
// (Pool.RoundTrip returns a Stream, a net.Conn-like byte stream with
// half-close); the server side is Server.ServeConn, which hands each request
// stream to a Handler as a ServerStream. convert.go turns HTTP/1.1 heads into
// HTTP/2 ones and back, including the WebSocket handshake fields.
//
// Each connection has one reader goroutine (which never blocks on writes)
// and one writer goroutine that owns the Framer's write side: control frames
// go first, then one DATA frame per ready stream in round-robin order, so a
// stream blocked on flow control never blocks the others. The writer
// flushes its bufio.Writer only when it has nothing more to write.
// Receive windows are returned in batches once half a window has been
// consumed by the reader of the stream.
//
// See docs/h2tunnel.md for the chosen window and frame sizes, the abuse
// limits and the h2spec results.
package h2tunnel
