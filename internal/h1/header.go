// Package h1 reads and writes HTTP/1.1 message heads for the proxy data path:
// request and response lines, header fields with their original order, the
// body framing rules of RFC 9112, hop-by-hop field handling of RFC 9110, and
// the canonical spelling of WebSocket handshake fields from RFC 6455.
package h1

import "strings"

// Header is one header field as it appeared on the wire (name casing kept).
type Header struct {
	Name  string
	Value string
}

// Headers is an ordered list of header fields. Lookups ignore case.
type Headers []Header

// Get returns the value of the first field named name, or "".
func (h Headers) Get(name string) string {
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			return h[i].Value
		}
	}
	return ""
}

// Has reports whether a field named name is present.
func (h Headers) Has(name string) bool {
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			return true
		}
	}
	return false
}

// Values returns the values of every field named name, in order.
func (h Headers) Values(name string) []string {
	var out []string
	for i := range h {
		if strings.EqualFold(h[i].Name, name) {
			out = append(out, h[i].Value)
		}
	}
	return out
}

// Del removes every field named name.
func (h *Headers) Del(name string) {
	s := (*h)[:0]
	for _, f := range *h {
		if !strings.EqualFold(f.Name, name) {
			s = append(s, f)
		}
	}
	for i := len(s); i < len(*h); i++ {
		(*h)[i] = Header{}
	}
	*h = s
}

// Set replaces every field named name with one field.
func (h *Headers) Set(name, value string) {
	h.Del(name)
	*h = append(*h, Header{Name: name, Value: value})
}

// Add appends a field.
func (h *Headers) Add(name, value string) { *h = append(*h, Header{Name: name, Value: value}) }

// HasToken reports whether any field named name contains token in its
// comma-separated list, ignoring case (as for Connection and Upgrade).
func (h Headers) HasToken(name, token string) bool {
	for i := range h {
		if !strings.EqualFold(h[i].Name, name) {
			continue
		}
		for t := range strings.SplitSeq(h[i].Value, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Request is an HTTP/1.x request head.
type Request struct {
	Method  string
	Target  string // request-target as sent (origin-form, absolute-form, authority-form or "*")
	Proto   string // "HTTP/1.1" or "HTTP/1.0"
	Headers Headers
}

// Response is an HTTP/1.x response head.
type Response struct {
	Proto   string
	Status  int
	Reason  string
	Headers Headers
}
