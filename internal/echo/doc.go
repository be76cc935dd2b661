// Package echo is the WebSocket echo server wsmesh runs as the guide's
// "websockets-server" workload (wsmesh echo). It speaks RFC 6455 on every
// path except /healthz: text and binary messages, fragmented or not, are
// sent back with their type and content unchanged; pings are answered; the
// peer's close code and reason are echoed in the close handshake;
// permessage-deflate (RFC 7692) is negotiated when the client offers it; a
// subprotocol is chosen from a configured list; oversize messages are closed
// with 1009 and text messages that are not valid UTF-8 with 1007.
//
// Plain HTTP requests get a clear answer instead of a silent failure: GET
// /healthz returns 200 for probes, a request without "Upgrade: websocket"
// gets 426 Upgrade Required, and a WebSocket handshake that breaks RFC 6455
// (missing Sec-WebSocket-Key, wrong version, ...) gets 400 Bad Request.
//
// A Server can serve any number of listeners and is shut down with Shutdown,
// which sends every open WebSocket a close frame with 1001 (Going Away) and
// waits for the connections to finish.
package echo
