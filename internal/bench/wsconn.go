package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wsmesh/wsmesh/internal/sockio"
)

// Target is where connections go: the ws:// URL whose host and path appear
// in the handshake, and the loopback address actually dialled.
type Target struct {
	URL  *url.URL
	Addr string // host:port dialled
}

// ParseTarget parses a ws:// URL and applies --connect-to mappings
// (HOST:PORT -> ADDR:PORT). The address dialled must be a loopback
// address: a load generator has no business leaving the machine.
func ParseTarget(raw string, connectTo map[string]string) (*Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("target URL: %w", err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("target URL %q: only ws:// is supported", raw)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "80")
	}
	addr := hostport
	if to, ok := connectTo[hostport]; ok {
		addr = to
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); !(host == "localhost" || ip != nil && ip.IsLoopback()) {
		return nil, fmt.Errorf("address %q is not a loopback address (use --connect-to %s=127.0.0.1:PORT)", addr, hostport)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return &Target{URL: u, Addr: addr}, nil
}

// wsConn is a client WebSocket connection speaking raw RFC 6455 frames.
type wsConn struct {
	c     net.Conn
	br    *bufio.Reader
	frame []byte // the masked message frame, written again and again
	buf   []byte // payload destination of reads
	hdr   [8]byte
	ctl   [125]byte
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// dialWS connects, performs the opening handshake (no extensions, so
// messages cross every hop uncompressed) and prepares a binary message of
// size bytes.
func dialWS(ctx context.Context, t *Target, size int) (*wsConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	// Raw system calls (see package sockio): the generator shares the CPUs
	// with the proxies it measures, so it should take as little as it can.
	c = sockio.Wrap(c)
	w := &wsConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}
	if err := w.handshake(ctx, t); err != nil {
		c.Close()
		return nil, err
	}
	w.frame = clientFrame(0x2, payload(size))
	w.buf = make([]byte, max(size, 125))
	return w, nil
}

func (w *wsConn) handshake(ctx context.Context, t *Target) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = w.c.SetDeadline(dl)
	} else {
		_ = w.c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	defer w.c.SetDeadline(time.Time{})
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET " + t.URL.RequestURI() + " HTTP/1.1\r\nHost: " + t.URL.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsmesh-bench\r\n\r\n"
	if _, err := io.WriteString(w.c, req); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake: got %s, want 101", resp.Status)
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != base64.StdEncoding.EncodeToString(sum[:]) {
		return fmt.Errorf("handshake: bad Sec-WebSocket-Accept %q", got)
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		return fmt.Errorf("handshake: server chose extensions %q that were not offered", ext)
	}
	return nil
}

// payload returns n bytes of printable filler.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// clientFrame returns one final frame with the given opcode, masked with a
// random key as RFC 6455 §5.3 requires of clients.
func clientFrame(opcode byte, p []byte) []byte {
	var hdr [14]byte
	hdr[0] = 0x80 | opcode
	n := 2
	switch l := len(p); {
	case l < 126:
		hdr[1] = 0x80 | byte(l)
	case l <= 0xFFFF:
		hdr[1] = 0x80 | 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(l))
		n = 4
	default:
		hdr[1] = 0x80 | 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(l))
		n = 10
	}
	_, _ = rand.Read(hdr[n : n+4])
	mask := hdr[n : n+4]
	n += 4
	f := make([]byte, n+len(p))
	copy(f, hdr[:n])
	for i, b := range p {
		f[n+i] = b ^ mask[i&3]
	}
	return f
}

// writeMessage writes the prepared message frame.
func (w *wsConn) writeMessage() error {
	_, err := w.c.Write(w.frame)
	return err
}

// errClosed is returned by readMessage when the server sent a close frame.
var errClosed = errors.New("server sent a close frame")

// readMessage reads one data message (whatever its fragmentation) into
// w.buf, answering pings, and returns its length. It returns errClosed
// when a close frame arrives.
func (w *wsConn) readMessage() (int, error) {
	total := 0
	for {
		h := w.hdr[:2]
		if _, err := io.ReadFull(w.br, h); err != nil {
			return 0, err
		}
		fin, op, masked := h[0]&0x80 != 0, h[0]&0x0F, h[1]&0x80 != 0
		n := int64(h[1] & 0x7F)
		switch n {
		case 126:
			e := w.hdr[:2]
			if _, err := io.ReadFull(w.br, e); err != nil {
				return 0, err
			}
			n = int64(binary.BigEndian.Uint16(e))
		case 127:
			e := w.hdr[:8]
			if _, err := io.ReadFull(w.br, e); err != nil {
				return 0, err
			}
			n = int64(binary.BigEndian.Uint64(e))
		}
		if masked {
			return 0, errors.New("server sent a masked frame")
		}
		if n < 0 || n > 1<<30 {
			return 0, fmt.Errorf("frame of %d bytes", n)
		}
		if op >= 0x8 { // control frame, interleaved in a message
			body := w.ctl[:]
			if n > 125 {
				return 0, errors.New("control frame over 125 bytes")
			}
			if _, err := io.ReadFull(w.br, body[:n]); err != nil {
				return 0, err
			}
			switch op {
			case 0x8:
				return 0, errClosed
			case 0x9:
				if _, err := w.c.Write(clientFrame(0xA, body[:n])); err != nil {
					return 0, err
				}
			}
			continue
		}
		if need := total + int(n); need > len(w.buf) {
			nb := make([]byte, need)
			copy(nb, w.buf[:total])
			w.buf = nb
		}
		if _, err := io.ReadFull(w.br, w.buf[total:total+int(n)]); err != nil {
			return 0, err
		}
		total += int(n)
		if fin {
			return total, nil
		}
	}
}

// closeHandshake sends close 1000, waits (up to timeout) for the server's
// close frame, and closes the TCP connection.
func (w *wsConn) closeHandshake(timeout time.Duration) error {
	defer w.c.Close()
	var code [2]byte
	binary.BigEndian.PutUint16(code[:], 1000)
	if _, err := w.c.Write(clientFrame(0x8, code[:])); err != nil {
		return err
	}
	_ = w.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		if _, err := w.readMessage(); err != nil {
			if errors.Is(err, errClosed) {
				return nil
			}
			return err
		}
	}
}

// Close closes the TCP connection without a close handshake.
func (w *wsConn) Close() error { return w.c.Close() }

// ParseConnectTo parses HOST:PORT=ADDR:PORT items, as wsmesh client does.
func ParseConnectTo(items []string) (map[string]string, error) {
	m := map[string]string{}
	for _, c := range items {
		from, to, ok := strings.Cut(c, "=")
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("--connect-to %q: want HOST:PORT=ADDR:PORT", c)
		}
		m[from] = to
	}
	return m, nil
}
