package detect

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

func detectBytes(t *testing.T, data string, closeAfter bool) Protocol {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_, _ = io.WriteString(b, data)
		if closeAfter {
			b.Close()
		}
	}()
	br := bufio.NewReader(a)
	p, err := Detect(a, br, 200*time.Millisecond)
	if err != nil && err != io.EOF {
		t.Fatalf("%q: %v", data, err)
	}
	return p
}

func TestDetect(t *testing.T) {
	cases := []struct {
		in   string
		want Protocol
	}{
		{"GET / HTTP/1.1\r\n", HTTP1},
		{"POST /x HTTP/1.1\r\n", HTTP1},
		{"M-SEARCH * HTTP/1.1\r\n", HTTP1},
		{Preface + "\x00\x00", HTTP2},
		{"PRI * HTTP/1.1\r\n", HTTP1},
		{"\x16\x03\x01\x02\x00", TLS},
		{"\x00\x01binary", Opaque},
	}
	for _, c := range cases {
		if got := detectBytes(t, c.in, false); got != c.want {
			t.Errorf("%q: got %v want %v", c.in, got, c.want)
		}
	}
	// Server-first protocols: the client sends nothing.
	if got := detectBytes(t, "", false); got != Opaque {
		t.Errorf("silent client: %v", got)
	}
}

func TestDetectDoesNotConsume(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() { _, _ = io.WriteString(b, "GET / HTTP/1.1\r\n"); b.Close() }()
	br := bufio.NewReader(a)
	if _, err := Detect(a, br, time.Second); err != nil {
		t.Fatal(err)
	}
	line, _ := br.ReadString('\n')
	if line != "GET / HTTP/1.1\r\n" {
		t.Fatalf("consumed bytes: %q", line)
	}
}
