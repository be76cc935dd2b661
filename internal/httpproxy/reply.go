package httpproxy

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/wsmesh/wsmesh/internal/accesslog"
	"github.com/wsmesh/wsmesh/internal/h1"
)

// writeLocalReply answers downstream on the proxy's own behalf, in the
// manner of Envoy's local replies (plain-text body naming the cause), and
// fills the record.
func (p *Proxy) writeLocalReply(w io.Writer, lr *LocalReply, rec *accesslog.Record, closeConn bool) {
	body := lr.Body
	if body == "" {
		body = lr.Details
	}
	body += "\n"
	resp := &h1.Response{Proto: "HTTP/1.1", Status: lr.Status, Headers: h1.Headers{
		{Name: "content-length", Value: strconv.Itoa(len(body))},
		{Name: "content-type", Value: "text/plain"},
		{Name: "date", Value: time.Now().UTC().Format(timeFormat)},
		{Name: "server", Value: "wsmesh"},
	}}
	if closeConn {
		resp.Headers.Add("connection", "close")
	}
	buf := h1.AppendResponse(make([]byte, 0, 256+len(body)), resp)
	buf = append(buf, body...)
	_, _ = w.Write(buf)
	rec.ResponseCode = lr.Status
	rec.ResponseFlags = joinFlags(rec.ResponseFlags, lr.Flag)
	rec.ResponseCodeDetails = lr.Details
	rec.BytesSent += int64(len(body))
}

// RejectConn answers downstream connection c, whose bytes the caller found
// to be no HTTP/1.1 request, with lr as a local reply and logs it: it writes
// lr as an HTTP/1.1 response with "Connection: close" (within 5 seconds)
// and its body followed by a newline, then hands one record (protocol
// HTTP/1.1, started now; response_code, response_flags and
// response_code_details from lr; bytes_sent the body's length) to the access
// log and to OnRecord with a nil Target. The caller closes c.
func (p *Proxy) RejectConn(c net.Conn, lr *LocalReply) {
	rec := p.newRecord(c, time.Now())
	rec.Protocol = "HTTP/1.1"
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	p.writeLocalReply(c, lr, rec, true)
	p.finish(rec, nil)
}

const timeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

func joinFlags(have string, f accesslog.Flags) string {
	if f == 0 {
		return have
	}
	if have == "" || have == "-" {
		return f.String()
	}
	return have + "," + f.String()
}

// newRequestID returns a random UUID (version 4) for X-Request-Id.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte // 8-4-4-4-12 hex digits
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}
