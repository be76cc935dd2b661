package h2tunnel

import (
	"errors"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Request is an HTTP/2 request head. Header holds regular fields only,
// with lowercase names; pseudo-header fields are the named members.
// Protocol is the RFC 8441 :protocol (e.g. "websocket") of an extended
// CONNECT. NoBody sends END_STREAM on the HEADERS frame (client side) or
// reports that the request had none (server side).
type Request struct {
	Method, Scheme, Authority, Path, Protocol string
	Header                                    []hpack.HeaderField
	NoBody                                    bool
}

// Response is an HTTP/2 response head.
type Response struct {
	Status int
	Header []hpack.HeaderField
}

// isExtendedConnect reports whether r is an RFC 8441 CONNECT.
func (r *Request) isExtendedConnect() bool { return r.Method == "CONNECT" && r.Protocol != "" }

// hdrBlock is a header block being received (HEADERS + CONTINUATION).
type hdrBlock struct {
	streamID   uint32
	endStream  bool
	fields     []hpack.HeaderField
	size       uint32 // decoded header list size (RFC 9113 §6.5.2)
	limit      uint32
	tooBig     bool   // over limit: fields are incomplete
	invalid    string // first malformation, if any
	sawRegular bool
	encoded    int
	frames     int
}

// typicalFields is how many header fields a header block has room for
// before its slice grows.
const typicalFields = 16

func (c *conn) onHeadersFrame(f *http2.HeadersFrame) error {
	// Room for a typical request's fields up front: growing the slice
	// field by field costs five allocations per stream.
	c.hb = hdrBlock{streamID: f.StreamID, endStream: f.StreamEnded(), limit: c.ourHeaderList, fields: make([]hpack.HeaderField, 0, typicalFields)}
	if f.HasPriority() && f.Priority.StreamDep == f.StreamID {
		c.hb.invalid = "stream depends on itself"
	}
	c.dec.SetEmitEnabled(true)
	if err := c.decodeFragment(f.HeaderBlockFragment()); err != nil {
		return err
	}
	if f.HeadersEnded() {
		return c.endHeaders()
	}
	return nil
}

func (c *conn) onContinuation(f *http2.ContinuationFrame) error {
	c.hb.frames++
	if c.hb.frames > maxContinuationFrames {
		return connErr{http2.ErrCodeEnhanceYourCalm, "too many CONTINUATION frames"}
	}
	if err := c.decodeFragment(f.HeaderBlockFragment()); err != nil {
		return err
	}
	if f.HeadersEnded() {
		return c.endHeaders()
	}
	return nil
}

func (c *conn) decodeFragment(frag []byte) error {
	c.hb.encoded += len(frag)
	if c.hb.encoded > maxHeaderBlock(c.hb.limit) {
		return connErr{http2.ErrCodeEnhanceYourCalm, "header block too large"}
	}
	if _, err := c.dec.Write(frag); err != nil {
		if errors.Is(err, hpack.ErrStringLength) {
			return connErr{http2.ErrCodeEnhanceYourCalm, "header field too long"}
		}
		return connErr{http2.ErrCodeCompression, "HPACK: " + err.Error()}
	}
	return nil
}

func (c *conn) endHeaders() error {
	if err := c.dec.Close(); err != nil {
		return connErr{http2.ErrCodeCompression, "HPACK: " + err.Error()}
	}
	hb := c.hb
	c.hb = hdrBlock{}
	return c.role.onHeaders(&hb)
}

// onField is the HPACK decoder's emit function.
func (c *conn) onField(f hpack.HeaderField) {
	hb := &c.hb
	hb.size += f.Size()
	if hb.size > hb.limit {
		hb.tooBig = true
		hb.fields = nil
		c.dec.SetEmitEnabled(false)
		return
	}
	if hb.invalid == "" {
		if strings.HasPrefix(f.Name, ":") {
			if hb.sawRegular {
				hb.invalid = "pseudo-header field after regular field"
			}
		} else {
			hb.sawRegular = true
			if !validFieldName(f.Name) {
				hb.invalid = "invalid field name " + strconv.Quote(f.Name)
			}
		}
		if !validFieldValue(f.Value) {
			hb.invalid = "invalid value for field " + strconv.Quote(f.Name)
		}
	}
	hb.fields = append(hb.fields, f)
}

// validFieldName: a non-empty lowercase token (RFC 9113 §8.2.1).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || !isTokenLower[c] {
			return false
		}
	}
	return true
}

var isTokenLower = func() (t [128]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

// validFieldValue: no NUL, CR or LF (RFC 9113 §8.2.1).
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case 0, '\r', '\n':
			return false
		}
	}
	return true
}

// connectionSpecificH2 reports the fields RFC 9113 §8.2.2 forbids.
func connectionSpecificH2(f hpack.HeaderField) bool {
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	case "te":
		return f.Value != "trailers"
	}
	return false
}

// parseRequest validates a request header block (RFC 9113 §8.3.1,
// RFC 8441 §4) and returns the request, or a reason it is malformed.
func parseRequest(hb *hdrBlock, allowConnect bool) (*Request, int64, string) {
	req := &Request{NoBody: hb.endStream}
	var seen [5]bool
	i := 0
	for ; i < len(hb.fields); i++ {
		f := hb.fields[i]
		if !strings.HasPrefix(f.Name, ":") {
			break
		}
		var k int
		var dst *string
		switch f.Name {
		case ":method":
			k, dst = 0, &req.Method
		case ":scheme":
			k, dst = 1, &req.Scheme
		case ":authority":
			k, dst = 2, &req.Authority
		case ":path":
			k, dst = 3, &req.Path
		case ":protocol":
			k, dst = 4, &req.Protocol
		default:
			return nil, 0, "unknown or response pseudo-header field " + f.Name
		}
		if seen[k] {
			return nil, 0, "duplicate " + f.Name
		}
		seen[k] = true
		*dst = f.Value
	}
	req.Header = hb.fields[i:]
	declLen := int64(-1)
	for _, f := range req.Header {
		if connectionSpecificH2(f) {
			return nil, 0, "connection-specific field " + f.Name
		}
		if f.Name == "content-length" {
			n, err := strconv.ParseInt(f.Value, 10, 64)
			if err != nil || n < 0 || (declLen >= 0 && n != declLen) {
				return nil, 0, "invalid content-length"
			}
			declLen = n
		}
	}
	if req.Method == "" {
		return nil, 0, "missing :method"
	}
	switch {
	case req.Method == "CONNECT" && seen[4]:
		if !allowConnect {
			return nil, 0, ":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL"
		}
		if req.Scheme == "" || req.Path == "" || req.Authority == "" || req.Protocol == "" {
			return nil, 0, "extended CONNECT needs :scheme, :path and :authority"
		}
	case req.Method == "CONNECT":
		if seen[1] || seen[3] || req.Authority == "" {
			return nil, 0, "CONNECT carries only :method and :authority"
		}
	default:
		if seen[4] {
			return nil, 0, ":protocol on a non-CONNECT request"
		}
		if req.Scheme == "" || req.Path == "" {
			return nil, 0, "missing :scheme or :path"
		}
	}
	if hb.endStream && declLen > 0 {
		return nil, 0, "content-length without body"
	}
	return req, declLen, ""
}

// parseResponse validates a response header block.
func parseResponse(hb *hdrBlock) (*Response, string) {
	resp := &Response{Status: -1}
	i := 0
	for ; i < len(hb.fields); i++ {
		f := hb.fields[i]
		if !strings.HasPrefix(f.Name, ":") {
			break
		}
		if f.Name != ":status" || resp.Status != -1 {
			return nil, "unexpected pseudo-header field " + f.Name
		}
		n, err := strconv.Atoi(f.Value)
		if err != nil || len(f.Value) != 3 || n < 100 {
			return nil, "invalid :status"
		}
		resp.Status = n
	}
	if resp.Status == -1 {
		return nil, "missing :status"
	}
	resp.Header = hb.fields[i:]
	for _, f := range resp.Header {
		if connectionSpecificH2(f) {
			return nil, "connection-specific field " + f.Name
		}
	}
	return resp, ""
}

// requestFields builds the header list for r, checking its shape.
func requestFields(r *Request) ([]hpack.HeaderField, error) {
	if r.Method == "" {
		return nil, errorf(ErrInvalidRequest, "no method")
	}
	out := make([]hpack.HeaderField, 0, 5+len(r.Header))
	out = append(out, hpack.HeaderField{Name: ":method", Value: r.Method})
	switch {
	case r.isExtendedConnect():
		if r.Path == "" || r.Authority == "" {
			return nil, errorf(ErrInvalidRequest, "extended CONNECT needs :path and :authority")
		}
		out = append(out,
			hpack.HeaderField{Name: ":protocol", Value: r.Protocol},
			hpack.HeaderField{Name: ":scheme", Value: orDefault(r.Scheme, "http")},
			hpack.HeaderField{Name: ":path", Value: r.Path},
			hpack.HeaderField{Name: ":authority", Value: r.Authority})
	case r.Method == "CONNECT":
		if r.Authority == "" {
			return nil, errorf(ErrInvalidRequest, "CONNECT needs :authority")
		}
		out = append(out, hpack.HeaderField{Name: ":authority", Value: r.Authority})
	default:
		out = append(out,
			hpack.HeaderField{Name: ":scheme", Value: orDefault(r.Scheme, "http")},
			hpack.HeaderField{Name: ":path", Value: orDefault(r.Path, "/")})
		if r.Authority != "" {
			out = append(out, hpack.HeaderField{Name: ":authority", Value: r.Authority})
		}
	}
	for _, f := range r.Header {
		if !validFieldName(f.Name) || !validFieldValue(f.Value) || connectionSpecificH2(f) {
			return nil, errorf(ErrInvalidRequest, "field %q not allowed in HTTP/2", f.Name)
		}
		out = append(out, hpack.HeaderField{Name: f.Name, Value: f.Value, Sensitive: f.Sensitive})
	}
	return out, nil
}

// responseFields builds the header list for a response.
func responseFields(status int, hdr []hpack.HeaderField) ([]hpack.HeaderField, error) {
	if status < 100 || status > 999 {
		return nil, errorf(ErrInvalidRequest, "invalid status %d", status)
	}
	out := make([]hpack.HeaderField, 0, 1+len(hdr))
	out = append(out, hpack.HeaderField{Name: ":status", Value: statusString(status)})
	for _, f := range hdr {
		if !validFieldName(f.Name) || !validFieldValue(f.Value) || connectionSpecificH2(f) {
			return nil, errorf(ErrInvalidRequest, "field %q not allowed in HTTP/2", f.Name)
		}
		out = append(out, hpack.HeaderField{Name: f.Name, Value: f.Value, Sensitive: f.Sensitive})
	}
	return out, nil
}
