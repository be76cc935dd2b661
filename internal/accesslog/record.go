// Package accesslog writes one line per proxied HTTP request or WebSocket
// connection in Istio's default JSON access-log format, extended with the
// WebSocket observations wsmesh makes passively from frame headers.
package accesslog

import "time"

// Record is everything known about one proxied request or WebSocket when it
// ends. Field meanings follow Envoy's access-log command operators as Istio's
// default JSON format uses them; the JSON key of each field is given beside it.
// A zero string field is written as JSON null, as Envoy writes "-" values.
type Record struct {
	StartTime                      time.Time     // start_time (RFC 3339, millisecond precision, UTC)
	RouteName                      string        // route_name
	Method                         string        // method
	Path                           string        // path (X-Envoy-Original-Path or :path)
	Protocol                       string        // protocol: "HTTP/1.1" or "HTTP/2" as seen downstream
	ResponseCode                   int           // response_code (0 when no response was sent)
	ResponseFlags                  string        // response_flags, Envoy's short codes joined by ",", "-" when none
	ResponseCodeDetails            string        // response_code_details
	ConnectionTerminationDetails   string        // connection_termination_details
	UpstreamTransportFailureReason string        // upstream_transport_failure_reason
	BytesReceived                  int64         // bytes_received: body bytes from downstream (for WebSocket, every byte after the handshake)
	BytesSent                      int64         // bytes_sent: body bytes to downstream
	Duration                       time.Duration // duration, written in milliseconds
	UpstreamServiceTime            time.Duration // upstream_service_time in ms; negative means unknown (null)
	XForwardedFor                  string        // x_forwarded_for
	UserAgent                      string        // user_agent
	RequestID                      string        // request_id
	Authority                      string        // authority
	UpstreamHost                   string        // upstream_host
	UpstreamCluster                string        // upstream_cluster
	UpstreamLocalAddress           string        // upstream_local_address
	DownstreamLocalAddress         string        // downstream_local_address
	DownstreamRemoteAddress        string        // downstream_remote_address

	// requested_server_name is always null: wsmesh terminates no TLS, so
	// it never sees a server name.

	// WebSocket holds what the frame observer saw; nil for plain HTTP.
	WebSocket *WebSocket
}

// WebSocket is the passive view of one WebSocket connection. Downstream means
// frames the downstream peer sent; upstream means frames the upstream peer sent.
type WebSocket struct {
	Subprotocol        string // websocket_subprotocol
	Extensions         string // websocket_extensions (as negotiated in the 101)
	FramesDownstream   int64  // websocket_frames_downstream
	MessagesDownstream int64  // websocket_messages_downstream
	FramesUpstream     int64  // websocket_frames_upstream
	MessagesUpstream   int64  // websocket_messages_upstream
	CloseCode          int    // websocket_close_code: code of the first close frame seen (0: none, 1005: close without code)
	CloseReason        string // websocket_close_reason
	ClosedBy           string // websocket_closed_by: "downstream", "upstream" (who sent the first close frame or ended TCP first), or ""
}
