package httpproxy

import (
	"crypto/rand"
	"fmt"
	"io"
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
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
