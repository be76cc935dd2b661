package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http/httputil"
	"strconv"
	"strings"
)

// BodyKind says how a message body is delimited (RFC 9112 §6).
type BodyKind int

const (
	BodyNone       BodyKind = iota // no body
	BodyLength                     // Content-Length bytes
	BodyChunked                    // chunked transfer coding
	BodyUntilClose                 // response read until the connection closes
)

// Body is the framing of one message body.
type Body struct {
	Kind   BodyKind
	Length int64 // for BodyLength
}

// RequestBody returns the framing of a request body and rejects the
// ambiguous framings used for request smuggling: Transfer-Encoding together
// with Content-Length, conflicting or malformed Content-Length values, and
// any transfer coding other than a single "chunked".
func RequestBody(req *Request) (Body, error) {
	te := req.Headers.Values("Transfer-Encoding")
	cl := req.Headers.Values("Content-Length")
	if len(te) > 0 {
		if len(cl) > 0 {
			return Body{}, errorf(400, "http1.content_length_and_chunked_not_allowed", "both Transfer-Encoding and Content-Length present")
		}
		if req.Proto == "HTTP/1.0" {
			return Body{}, errorf(400, "http1.invalid_transfer_encoding", "Transfer-Encoding in an HTTP/1.0 request")
		}
		if len(te) != 1 || !strings.EqualFold(strings.TrimSpace(te[0]), "chunked") {
			return Body{}, errorf(501, "http1.invalid_transfer_encoding", "unsupported Transfer-Encoding %q", strings.Join(te, ", "))
		}
		return Body{Kind: BodyChunked}, nil
	}
	n, ok, err := contentLength(cl)
	if err != nil {
		return Body{}, err
	}
	if !ok || n == 0 {
		return Body{Kind: BodyNone}, nil
	}
	return Body{Kind: BodyLength, Length: n}, nil
}

// ResponseBody returns the framing of a response to a request with the
// given method.
func ResponseBody(method string, resp *Response) (Body, error) {
	if method == "HEAD" || (resp.Status >= 100 && resp.Status < 200) || resp.Status == 204 || resp.Status == 304 {
		return Body{Kind: BodyNone}, nil
	}
	if method == "CONNECT" && resp.Status >= 200 && resp.Status < 300 {
		return Body{Kind: BodyNone}, nil
	}
	te := resp.Headers.Values("Transfer-Encoding")
	if len(te) > 0 {
		last := strings.TrimSpace(te[len(te)-1])
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = strings.TrimSpace(last[i+1:])
		}
		if strings.EqualFold(last, "chunked") && len(te) == 1 && !strings.Contains(te[0], ",") {
			return Body{Kind: BodyChunked}, nil
		}
		return Body{Kind: BodyUntilClose}, nil
	}
	n, ok, err := contentLength(resp.Headers.Values("Content-Length"))
	if err != nil {
		err.(*Error).Status = 502
		return Body{}, err
	}
	if ok {
		if n == 0 {
			return Body{Kind: BodyNone}, nil
		}
		return Body{Kind: BodyLength, Length: n}, nil
	}
	return Body{Kind: BodyUntilClose}, nil
}

func contentLength(values []string) (int64, bool, error) {
	if len(values) == 0 {
		return 0, false, nil
	}
	var n int64 = -1
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			m, err := strconv.ParseInt(part, 10, 64)
			if err != nil || m < 0 || part == "" || part[0] == '+' {
				return 0, false, errorf(400, "http1.invalid_content_length", "invalid Content-Length %q", truncate(v))
			}
			if n >= 0 && m != n {
				return 0, false, errorf(400, "http1.invalid_content_length", "conflicting Content-Length values")
			}
			n = m
		}
	}
	return n, true, nil
}

// ErrBodyTruncated is returned when a body ends before its framing says.
var ErrBodyTruncated = errors.New("message body truncated")

// CopyBody copies one body from br to dst keeping its framing as it is on
// the wire (chunked stays chunked, with its trailer). It returns the number
// of payload bytes (chunk data, not chunk framing).
func CopyBody(dst io.Writer, br *bufio.Reader, b Body) (int64, error) {
	switch b.Kind {
	case BodyNone:
		return 0, nil
	case BodyLength:
		n, err := io.CopyN(dst, br, b.Length)
		if err == io.EOF {
			err = ErrBodyTruncated
		}
		return n, err
	case BodyUntilClose:
		return io.Copy(dst, br)
	case BodyChunked:
		return copyChunked(dst, br)
	}
	return 0, fmt.Errorf("unknown body kind %d", b.Kind)
}

const maxChunkLine = 4096

func copyChunked(dst io.Writer, br *bufio.Reader) (int64, error) {
	var total int64
	var scratch []byte
	for {
		budget := maxChunkLine
		line, err := readLine(br, &budget, &scratch)
		if err != nil {
			return total, chunkErr(err)
		}
		sizeStr := string(line)
		if i := strings.IndexByte(sizeStr, ';'); i >= 0 {
			sizeStr = sizeStr[:i]
		}
		sizeStr = strings.TrimRight(sizeStr, " \t")
		size, err := strconv.ParseUint(sizeStr, 16, 63)
		if err != nil || sizeStr == "" {
			return total, errorf(400, "http1.codec_error", "invalid chunk size %q", truncate(string(line)))
		}
		if _, err := fmt.Fprintf(dst, "%s\r\n", line); err != nil {
			return total, err
		}
		if size == 0 {
			// Trailer section, then the final CRLF.
			budget := 16 << 10
			for {
				t, err := readLine(br, &budget, &scratch)
				if err != nil {
					return total, chunkErr(err)
				}
				if _, err := fmt.Fprintf(dst, "%s\r\n", t); err != nil {
					return total, err
				}
				if len(t) == 0 {
					return total, nil
				}
			}
		}
		n, err := io.CopyN(dst, br, int64(size))
		total += n
		if err != nil {
			return total, chunkErr(err)
		}
		budget = 2
		crlf, err := readLine(br, &budget, &scratch)
		if err != nil || len(crlf) != 0 {
			return total, errorf(400, "http1.codec_error", "chunk data not followed by CRLF")
		}
		if _, err := io.WriteString(dst, "\r\n"); err != nil {
			return total, err
		}
	}
}

func chunkErr(err error) error {
	if errors.Is(err, io.EOF) {
		return ErrBodyTruncated
	}
	return err
}

// BodyReader returns a reader of the decoded payload of a body (chunked
// coding removed, trailer discarded), for carrying it over HTTP/2.
func BodyReader(br *bufio.Reader, b Body) io.Reader {
	switch b.Kind {
	case BodyLength:
		return &exactReader{r: io.LimitReader(br, b.Length), want: b.Length}
	case BodyUntilClose:
		return br
	case BodyChunked:
		return &trailerSkipper{br: br, cr: httputil.NewChunkedReader(br)}
	}
	return eofReader{}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

type exactReader struct {
	r    io.Reader
	want int64
	got  int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.got += int64(n)
	if err == io.EOF && e.got < e.want {
		err = ErrBodyTruncated
	}
	return n, err
}

type trailerSkipper struct {
	br   *bufio.Reader
	cr   io.Reader
	done bool
}

func (t *trailerSkipper) Read(p []byte) (int, error) {
	if t.done {
		return 0, io.EOF
	}
	n, err := t.cr.Read(p)
	if err == io.EOF {
		var scratch []byte
		budget := 16 << 10
		for {
			line, lerr := readLine(t.br, &budget, &scratch)
			if lerr != nil {
				return n, chunkErr(lerr)
			}
			if len(line) == 0 {
				break
			}
		}
		t.done = true
	} else if err == io.ErrUnexpectedEOF {
		err = ErrBodyTruncated
	}
	return n, err
}
