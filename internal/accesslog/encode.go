package accesslog

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// timeLayout is Envoy's %START_TIME% default: RFC 3339, UTC, milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z"

// AppendJSON appends r as one JSON object in Istio's default JSON access-log
// format, followed by a newline, and returns the extended buffer. Keys come in
// the order of the Record fields; the websocket_* keys follow only when
// r.WebSocket is non-nil. Empty strings are written as null, as Envoy writes
// its "-" placeholder in JSON formats. The encoder uses no reflection and
// allocates nothing when dst has room.
func AppendJSON(dst []byte, r *Record) []byte {
	dst = append(dst, `{"start_time":`...)
	if r.StartTime.IsZero() {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = r.StartTime.UTC().AppendFormat(dst, timeLayout)
		dst = append(dst, '"')
	}
	dst = appendStringField(dst, `,"route_name":`, r.RouteName)
	dst = appendStringField(dst, `,"method":`, r.Method)
	dst = appendStringField(dst, `,"path":`, r.Path)
	dst = appendStringField(dst, `,"protocol":`, r.Protocol)
	dst = append(dst, `,"response_code":`...)
	dst = strconv.AppendInt(dst, int64(r.ResponseCode), 10)
	dst = append(dst, `,"response_flags":`...)
	if r.ResponseFlags == "" {
		dst = append(dst, `"-"`...)
	} else {
		dst = AppendQuoted(dst, r.ResponseFlags)
	}
	dst = appendStringField(dst, `,"response_code_details":`, r.ResponseCodeDetails)
	dst = appendStringField(dst, `,"connection_termination_details":`, r.ConnectionTerminationDetails)
	dst = appendStringField(dst, `,"upstream_transport_failure_reason":`, r.UpstreamTransportFailureReason)
	dst = append(dst, `,"bytes_received":`...)
	dst = strconv.AppendInt(dst, r.BytesReceived, 10)
	dst = append(dst, `,"bytes_sent":`...)
	dst = strconv.AppendInt(dst, r.BytesSent, 10)
	dst = append(dst, `,"duration":`...)
	dst = strconv.AppendInt(dst, int64(r.Duration/time.Millisecond), 10)
	// Envoy takes upstream_service_time from the x-envoy-upstream-service-time
	// response header, so Istio's JSON logs carry it as a string of digits.
	dst = append(dst, `,"upstream_service_time":`...)
	if r.UpstreamServiceTime < 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = strconv.AppendInt(dst, int64(r.UpstreamServiceTime/time.Millisecond), 10)
		dst = append(dst, '"')
	}
	dst = appendStringField(dst, `,"x_forwarded_for":`, r.XForwardedFor)
	dst = appendStringField(dst, `,"user_agent":`, r.UserAgent)
	dst = appendStringField(dst, `,"request_id":`, r.RequestID)
	dst = appendStringField(dst, `,"authority":`, r.Authority)
	dst = appendStringField(dst, `,"upstream_host":`, r.UpstreamHost)
	dst = appendStringField(dst, `,"upstream_cluster":`, r.UpstreamCluster)
	dst = appendStringField(dst, `,"upstream_local_address":`, r.UpstreamLocalAddress)
	dst = appendStringField(dst, `,"downstream_local_address":`, r.DownstreamLocalAddress)
	dst = appendStringField(dst, `,"downstream_remote_address":`, r.DownstreamRemoteAddress)
	dst = append(dst, `,"requested_server_name":null`...) // no TLS is terminated (see Record)
	if ws := r.WebSocket; ws != nil {
		dst = appendStringField(dst, `,"websocket_subprotocol":`, ws.Subprotocol)
		dst = appendStringField(dst, `,"websocket_extensions":`, ws.Extensions)
		dst = append(dst, `,"websocket_frames_downstream":`...)
		dst = strconv.AppendInt(dst, ws.FramesDownstream, 10)
		dst = append(dst, `,"websocket_messages_downstream":`...)
		dst = strconv.AppendInt(dst, ws.MessagesDownstream, 10)
		dst = append(dst, `,"websocket_frames_upstream":`...)
		dst = strconv.AppendInt(dst, ws.FramesUpstream, 10)
		dst = append(dst, `,"websocket_messages_upstream":`...)
		dst = strconv.AppendInt(dst, ws.MessagesUpstream, 10)
		dst = append(dst, `,"websocket_close_code":`...)
		if ws.CloseCode == 0 {
			dst = append(dst, "null"...)
		} else {
			dst = strconv.AppendInt(dst, int64(ws.CloseCode), 10)
		}
		dst = appendStringField(dst, `,"websocket_close_reason":`, ws.CloseReason)
		dst = appendStringField(dst, `,"websocket_closed_by":`, ws.ClosedBy)
	}
	return append(dst, '}', '\n')
}

// MarshalJSON returns the access-log line for r without the trailing newline.
func (r *Record) MarshalJSON() ([]byte, error) {
	b := AppendJSON(make([]byte, 0, 1024), r)
	return b[:len(b)-1], nil
}

func appendStringField(dst []byte, key, v string) []byte {
	dst = append(dst, key...)
	if v == "" {
		return append(dst, "null"...)
	}
	return AppendQuoted(dst, v)
}

const hexDigits = "0123456789abcdef"

// safe[b] is true for ASCII bytes that need no escaping in a JSON string.
var safe = func() (t [utf8.RuneSelf]bool) {
	for i := 0x20; i < utf8.RuneSelf; i++ {
		t[i] = i != '"' && i != '\\'
	}
	return t
}()

// AppendQuoted appends s as a JSON string. It escapes exactly as
// encoding/json does with HTML escaping off: the short escapes for \b \f \n
// \r \t " and \\, \u00XX for other control bytes, \u2028 and \u2029 spelled
// out, and each byte of invalid UTF-8 replaced by U+FFFD.
func AppendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if safe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
