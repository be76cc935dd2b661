package h2tunnel

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/wsmesh/wsmesh/internal/sockio"
)

// TestConnReaderKeepsBuffered: the read loop's reader on a TCP socket
// whose caller already buffered bytes (the preface peeked by protocol
// detection) reads those bytes first, then the socket through sockio;
// on anything else it is the caller's reader.
func TestConnReaderKeepsBuffered(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	pbr := bufio.NewReader(p1)
	if connReader(p1, pbr) != pbr {
		t.Error("a reader on a net.Pipe was replaced")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := bytes.Repeat([]byte("PRI * HTTP/2.0\r\n"), 1000)
	if _, err := c.Write(msg[:100]); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(s, 4096)
	if _, err := br.Peek(24); err != nil {
		t.Fatal(err)
	}
	r := connReader(s, br)
	if r == br {
		t.Fatal("the reader on a TCP socket was not replaced")
	}
	go func() {
		c.Write(msg[100:])
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, want the %d written", len(got), len(msg))
	}
	if _, ok := sockio.Wrap(s).(*sockio.Conn); !ok {
		t.Error("sockio did not wrap the TCP socket")
	}
}
