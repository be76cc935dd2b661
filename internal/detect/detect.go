// Package detect classifies the first bytes of a downstream connection so a
// listener can pick the right codec: HTTP/1.x, the HTTP/2 connection preface
// (h2c with prior knowledge), a TLS ClientHello, or opaque bytes.
package detect

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Protocol is what the first bytes of a connection look like.
type Protocol int

const (
	Opaque Protocol = iota // none of the below: relay as TCP
	HTTP1                  // an HTTP/1.x request line
	HTTP2                  // the HTTP/2 client connection preface
	TLS                    // a TLS handshake record
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "HTTP/1.1"
	case HTTP2:
		return "HTTP/2"
	case TLS:
		return "TLS"
	}
	return "opaque"
}

// Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var methods = []string{"GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// Detect peeks at br (without consuming) until the protocol is known. When
// the peer sends nothing within timeout, a server-first protocol is assumed
// and Opaque is returned with a nil error. Detect never reads past what the
// decision needs, so the caller's codec sees every byte.
func Detect(c net.Conn, br *bufio.Reader, timeout time.Duration) (Protocol, error) {
	if timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		defer c.SetReadDeadline(time.Time{})
	}
	for n := 1; n <= len(Preface); n++ {
		b, err := br.Peek(n)
		if len(b) < n {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if len(b) == 0 {
					return Opaque, nil
				}
				return classify(b), nil
			}
			if err == io.EOF && len(b) > 0 {
				return classify(b), nil
			}
			return Opaque, err
		}
		if p, done := decide(b); done {
			return p, nil
		}
	}
	return Opaque, nil
}

// decide returns the protocol once the prefix b settles it.
func decide(b []byte) (Protocol, bool) {
	if b[0] == 0x16 {
		return TLS, true
	}
	if len(b) <= len(Preface) && bytes.HasPrefix([]byte(Preface), b) {
		if len(b) == len(Preface) {
			return HTTP2, true
		}
		// "PRI " could still be an HTTP/1 method; keep reading.
		return 0, false
	}
	maybe := false
	for _, m := range methods {
		if len(b) >= len(m) {
			if string(b[:len(m)]) == m {
				return HTTP1, true
			}
		} else if m[:len(b)] == string(b) {
			maybe = true
		}
	}
	if maybe {
		return 0, false
	}
	// Any other token followed by a space still is an HTTP/1 request line.
	for i, c := range b {
		if c == ' ' && i > 0 {
			return HTTP1, true
		}
		if !isTokenChar(c) {
			return Opaque, true
		}
	}
	if len(b) > 16 {
		return Opaque, true
	}
	return 0, false
}

func classify(b []byte) Protocol {
	if p, done := decide(b); done {
		return p
	}
	return Opaque
}

func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !bytes.ContainsRune([]byte(`"(),/:;<=>?@[\]{}`), rune(c))
}
