package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits bound what a message head may cost.
type Limits struct {
	MaxHeadBytes int // request/status line plus all fields; default 60 KiB (Envoy's max_request_headers_kb)
	MaxFields    int // default 100 (Envoy's max_headers_count)
}

func (l Limits) withDefaults() Limits {
	if l.MaxHeadBytes <= 0 {
		l.MaxHeadBytes = 60 << 10
	}
	if l.MaxFields <= 0 {
		l.MaxFields = 100
	}
	return l
}

// Error is a malformed or unacceptable message head. Status is the HTTP
// status a server answers with; Details is an Envoy-style
// response_code_details string naming the cause.
type Error struct {
	Status  int
	Details string
	Err     error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Details, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func errorf(status int, details, format string, args ...any) *Error {
	return &Error{Status: status, Details: details, Err: fmt.Errorf(format, args...)}
}

// ErrHeadersTooLarge is wrapped by the *Error returned when a head exceeds Limits.
var ErrHeadersTooLarge = errors.New("message head too large")

// readLine returns the next line without its CRLF. It fails when the head
// would exceed budget bytes. The returned slice is valid until the next read.
func readLine(br *bufio.Reader, budget *int, scratch *[]byte) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		*scratch = append((*scratch)[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(*scratch) > *budget {
				return nil, &Error{Status: 431, Details: "http1.headers_too_large", Err: ErrHeadersTooLarge}
			}
			line, err = br.ReadSlice('\n')
			*scratch = append(*scratch, line...)
		}
		line = *scratch
	}
	*budget -= len(line)
	if *budget < 0 {
		return nil, &Error{Status: 431, Details: "http1.headers_too_large", Err: ErrHeadersTooLarge}
	}
	if err != nil {
		return nil, err
	}
	n := len(line) - 1 // drop '\n'
	if n == 0 || line[n-1] != '\r' {
		return nil, errorf(400, "http1.codec_error", "line not terminated by CRLF")
	}
	return line[:n-1], nil
}

// ReadRequest reads and validates one request head. It returns io.EOF when
// the connection closed cleanly before any byte of a new request.
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	lim = lim.withDefaults()
	budget := lim.MaxHeadBytes
	var scratch []byte
	var line []byte
	var err error
	// RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
	for i := 0; ; i++ {
		line, err = readLine(br, &budget, &scratch)
		if err != nil {
			return nil, eofOr(err, i == 0 && budget == lim.MaxHeadBytes)
		}
		if len(line) != 0 || i > 0 {
			break
		}
	}
	req := &Request{}
	if err := parseRequestLine(line, req); err != nil {
		return nil, err
	}
	if req.Headers, err = readFields(br, &budget, &scratch, lim.MaxFields); err != nil {
		return nil, err
	}
	if err := validateRequest(req); err != nil {
		return nil, err
	}
	return req, nil
}

func eofOr(err error, clean bool) error {
	if _, ok := err.(*Error); ok {
		return err
	}
	if errors.Is(err, io.EOF) {
		if clean {
			return io.EOF
		}
		return errorf(400, "http1.codec_error", "connection closed inside the message head: %w", io.ErrUnexpectedEOF)
	}
	return err
}

func parseRequestLine(line []byte, req *Request) error {
	s := string(line)
	sp1 := strings.IndexByte(s, ' ')
	if sp1 <= 0 {
		return errorf(400, "http1.codec_error", "malformed request line %q", truncate(s))
	}
	rest := s[sp1+1:]
	sp2 := strings.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return errorf(400, "http1.codec_error", "malformed request line %q", truncate(s))
	}
	req.Method, req.Target, req.Proto = s[:sp1], rest[:sp2], rest[sp2+1:]
	if !isToken(req.Method) {
		return errorf(400, "http1.codec_error", "invalid method %q", truncate(req.Method))
	}
	for i := 0; i < len(req.Target); i++ {
		if c := req.Target[i]; c <= ' ' || c == 0x7f {
			return errorf(400, "http1.codec_error", "invalid request target %q", truncate(req.Target))
		}
	}
	switch req.Proto {
	case "HTTP/1.1", "HTTP/1.0":
	default:
		if strings.HasPrefix(req.Proto, "HTTP/") {
			return errorf(505, "http1.codec_error", "unsupported protocol version %q", truncate(req.Proto))
		}
		return errorf(400, "http1.codec_error", "malformed request line %q", truncate(s))
	}
	return nil
}

// ReadResponse reads one response head.
func ReadResponse(br *bufio.Reader, lim Limits) (*Response, error) {
	lim = lim.withDefaults()
	budget := lim.MaxHeadBytes
	var scratch []byte
	line, err := readLine(br, &budget, &scratch)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	s := string(line)
	resp := &Response{}
	sp1 := strings.IndexByte(s, ' ')
	if sp1 <= 0 || len(s) < sp1+4 {
		return nil, errorf(502, "upstream_reset_before_response_started{protocol_error}", "malformed status line %q", truncate(s))
	}
	resp.Proto = s[:sp1]
	code := s[sp1+1 : sp1+4]
	resp.Status, err = strconv.Atoi(code)
	if err != nil || resp.Status < 100 || resp.Status > 999 || (len(s) > sp1+4 && s[sp1+4] != ' ') ||
		(resp.Proto != "HTTP/1.1" && resp.Proto != "HTTP/1.0") {
		return nil, errorf(502, "upstream_reset_before_response_started{protocol_error}", "malformed status line %q", truncate(s))
	}
	if len(s) > sp1+5 {
		resp.Reason = s[sp1+5:]
	}
	if resp.Headers, err = readFields(br, &budget, &scratch, lim.MaxFields); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return resp, nil
}

func readFields(br *bufio.Reader, budget *int, scratch *[]byte, maxFields int) (Headers, error) {
	h := make(Headers, 0, 16)
	for {
		line, err := readLine(br, budget, scratch)
		if err != nil {
			return nil, eofOr(err, false)
		}
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, errorf(400, "http1.codec_error", "obsolete line folding in header fields")
		}
		colon := -1
		for i, c := range line {
			if c == ':' {
				colon = i
				break
			}
		}
		if colon <= 0 {
			return nil, errorf(400, "http1.codec_error", "malformed header field %q", truncate(string(line)))
		}
		name := string(line[:colon])
		if !isToken(name) {
			return nil, errorf(400, "http1.codec_error", "invalid header field name %q", truncate(name))
		}
		v := line[colon+1:]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			v = v[:len(v)-1]
		}
		for _, c := range v {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return nil, errorf(400, "http1.codec_error", "invalid character in header field %q", name)
			}
		}
		if len(h) >= maxFields {
			return nil, &Error{Status: 431, Details: "http1.too_many_headers", Err: fmt.Errorf("more than %d header fields: %w", maxFields, ErrHeadersTooLarge)}
		}
		h = append(h, Header{Name: name, Value: string(v)})
	}
}

func validateRequest(req *Request) error {
	hosts := req.Headers.Values("Host")
	if len(hosts) > 1 {
		return errorf(400, "http1.codec_error", "multiple Host fields")
	}
	if len(hosts) == 0 && req.Proto == "HTTP/1.1" {
		return errorf(400, "http1.codec_error", "missing Host field")
	}
	_, err := RequestBody(req)
	return err
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar[s[i]] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
