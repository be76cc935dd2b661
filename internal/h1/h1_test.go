package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func readReq(s string) (*Request, error) {
	return ReadRequest(bufio.NewReaderSize(strings.NewReader(s), 64), Limits{MaxHeadBytes: 1024, MaxFields: 8})
}

func TestReadRequestValid(t *testing.T) {
	r, err := readReq("\r\nGET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nupgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ== \r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != "GET" || r.Target != "/chat?x=1" || r.Proto != "HTTP/1.1" {
		t.Fatalf("bad line: %+v", r)
	}
	if got := r.Headers.Get("sec-websocket-key"); got != "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Fatalf("key %q", got)
	}
	if r.Headers[1].Name != "upgrade" {
		t.Fatalf("casing not kept: %q", r.Headers[1].Name)
	}
	if !IsWebSocketUpgrade(r) {
		t.Fatal("not detected as upgrade")
	}
}

func TestReadRequestErrors(t *testing.T) {
	long := strings.Repeat("a", 2000)
	cases := []struct {
		name, in string
		status   int
	}{
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad line", "GET /\r\n\r\n", 400},
		{"bad version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"space in name", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"obs fold", "GET / HTTP/1.1\r\nHost: a\r\n x\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
		{"cl and te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"conflicting cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
		{"bad cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400},
		{"te gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"huge header", "GET / HTTP/1.1\r\nHost: a\r\nX: " + long + "\r\n\r\n", 431},
		{"too many", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", 9) + "\r\n", 431},
		{"ctl in value", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400},
		{"truncated", "GET / HTTP/1.1\r\nHost: a\r\n", 400},
	}
	for _, c := range cases {
		_, err := readReq(c.in)
		var e *Error
		if !errors.As(err, &e) || e.Status != c.status {
			t.Errorf("%s: got %v, want status %d", c.name, err, c.status)
		}
	}
	if _, err := readReq(""); err != io.EOF {
		t.Errorf("empty input: %v, want io.EOF", err)
	}
}

func TestRequestBodyFraming(t *testing.T) {
	r, err := readReq("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RequestBody(r)
	if b.Kind != BodyLength || b.Length != 5 {
		t.Fatalf("%+v", b)
	}
}

func TestCopyChunkedKeepsFraming(t *testing.T) {
	in := "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nNEXT"
	br := bufio.NewReader(strings.NewReader(in))
	var out bytes.Buffer
	n, err := CopyBody(&out, br, Body{Kind: BodyChunked})
	if err != nil || n != 11 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if out.String() != in[:len(in)-4] {
		t.Fatalf("framing changed: %q", out.String())
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "NEXT" {
		t.Fatalf("over-read: %q", rest)
	}
	br = bufio.NewReader(strings.NewReader(in))
	dec, err := io.ReadAll(BodyReader(br, Body{Kind: BodyChunked}))
	if err != nil || string(dec) != "hello world" {
		t.Fatalf("decoded %q err=%v", dec, err)
	}
	rest, _ = io.ReadAll(br)
	if string(rest) != "NEXT" {
		t.Fatalf("decoder over-read: %q", rest)
	}
	if _, err := CopyBody(io.Discard, bufio.NewReader(strings.NewReader("5\r\nhel")), Body{Kind: BodyChunked}); !errors.Is(err, ErrBodyTruncated) {
		t.Fatalf("truncated chunk: %v", err)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	in := "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzZqDJ+xOo=\r\n\r\n"
	resp, err := ReadResponse(bufio.NewReader(strings.NewReader(in)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	out := string(AppendResponse(nil, resp))
	want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzZqDJ+xOo=\r\n\r\n"
	if out != want {
		t.Fatalf("got %q", out)
	}
	b, _ := ResponseBody("GET", resp)
	if b.Kind != BodyNone {
		t.Fatal("101 has no body")
	}
}

func TestRemoveHopByHop(t *testing.T) {
	h := Headers{{"Connection", "close, X-Secret"}, {"X-Secret", "1"}, {"Keep-Alive", "5"}, {"Host", "a"}, {"Transfer-Encoding", "chunked"}}
	RemoveHopByHop(&h, true)
	if len(h) != 2 || h.Get("Host") != "a" || h.Get("Transfer-Encoding") != "chunked" {
		t.Fatalf("%v", h)
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	f.Add("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	f.Add("GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		br := bufio.NewReaderSize(strings.NewReader(s), 32)
		r, err := ReadRequest(br, Limits{MaxHeadBytes: 4096})
		if err != nil {
			return
		}
		// A head we accept must survive a write and re-read unchanged.
		wire := AppendRequest(nil, r)
		r2, err := ReadRequest(bufio.NewReader(bytes.NewReader(wire)), Limits{MaxHeadBytes: 1 << 20})
		if err != nil {
			t.Fatalf("re-read of %q failed: %v", wire, err)
		}
		if r2.Method != r.Method || r2.Target != r.Target || len(r2.Headers) != len(r.Headers) {
			t.Fatalf("round trip changed the head: %+v vs %+v", r, r2)
		}
		if b, err := RequestBody(r); err == nil {
			_, _ = CopyBody(io.Discard, br, b)
		}
	})
}
