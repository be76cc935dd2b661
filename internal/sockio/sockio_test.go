package sockio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/testutil"
)

func TestWrapOnlyTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Error("a net.Pipe end was wrapped")
	}
	x, _ := testutil.TCPPair(t)
	if _, ok := Wrap(x).(*Conn); !ok {
		t.Error("a TCP socket was not wrapped")
	}
}

func TestReadEAGAIN(t *testing.T) {
	a, _ := testutil.TCPPair(t)
	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) { _, rerr = Read(fd, make([]byte, 8)) }); err != nil {
		t.Fatal(err)
	}
	if rerr != syscall.EAGAIN {
		t.Fatalf("read on an empty socket: %v, want EAGAIN", rerr)
	}
}

// TestConnRoundTrip: bytes written with a Writer arrive through a Reader,
// including more than the socket buffers hold (Write must wait for the
// reader rather than fail with EAGAIN); then EOF after the peer's
// half-close.
func TestConnRoundTrip(t *testing.T) {
	a, b := testutil.TCPPair(t)
	a.SetWriteBuffer(16 << 10)
	b.SetReadBuffer(16 << 10)
	wa, wb := Wrap(a), Wrap(b)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	errc := make(chan error, 1)
	go func() {
		n, err := wa.Write(msg)
		if err == nil && n != len(msg) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = a.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(wb)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, sent %d (or they differ)", len(got), len(msg))
	}
	if n, err := wb.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
}

// TestConnDeadlinesAndClose: a read waiting for bytes ends at its
// deadline or when the socket is closed, as net.Conn's would.
func TestConnDeadlinesAndClose(t *testing.T) {
	a, _ := testutil.TCPPair(t)
	wa := Wrap(a)
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := wa.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	a.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := wa.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed socket: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not end when the socket was closed")
	}
	if _, err := wa.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed socket: %v", err)
	}
}

// TestWriteResetPeer: a write to a socket the peer reset reports the
// system call error, as *os.SyscallError.
func TestWriteResetPeer(t *testing.T) {
	a, b := testutil.TCPPair(t)
	b.SetLinger(0)
	b.Close()
	wa := Wrap(a)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = wa.Write([]byte("hello"))
		time.Sleep(time.Millisecond)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		t.Fatalf("write to a reset peer: %v", err)
	}
}

// TestNoAllocations checks that a Reader and a Writer allocate nothing per
// call: a relay makes one of each per message.
func TestNoAllocations(t *testing.T) {
	a, b := testutil.TCPPair(t)
	w, r := NewWriter(a), NewReader(b)
	msg, buf := []byte("0123456789abcdef"), make([]byte, 64)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(msg); {
			n, err := r.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}); n != 0 {
		t.Fatalf("%v allocations per write and read", n)
	}
}

// TestErrorsReadAsNetConns: errors name the operation and the socket's
// addresses as net.Conn's do, and still match with errors.Is.
func TestErrorsReadAsNetConns(t *testing.T) {
	a, b := testutil.TCPPair(t)
	w, r := NewWriter(a), NewReader(b)
	_ = b.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := r.Read(make([]byte, 8))
	var oe *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" || oe.Addr.String() != b.RemoteAddr().String() {
		t.Fatalf("read past deadline: %#v", err)
	}
	b.SetLinger(0)
	b.Close() // a reset: a write fails in the kernel
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = w.Write([]byte("x"))
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.As(werr, &oe) || oe.Op != "write" || oe.Source.String() != a.LocalAddr().String() {
		t.Fatalf("write to a reset socket: %#v", werr)
	}
	var se *os.SyscallError
	if !errors.As(werr, &se) || !(errors.Is(werr, syscall.ECONNRESET) || errors.Is(werr, syscall.EPIPE)) {
		t.Fatalf("write to a reset socket: %v, want a reset or broken pipe", werr)
	}
	if want := "write tcp " + a.LocalAddr().String() + "->" + a.RemoteAddr().String() + ": "; !strings.HasPrefix(werr.Error(), want) {
		t.Fatalf("error text %q, want it to start %q", werr.Error(), want)
	}
}

// TestTryWriteStopsAtFullBuffer: TryWrite returns, short and without an
// error, once the socket takes no more, and the bytes it did write arrive
// in order; a Write then finishes the rest.
func TestTryWriteStopsAtFullBuffer(t *testing.T) {
	a, b := testutil.TCPPair(t)
	w := NewWriter(a)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: more than the buffers hold
	done := make(chan struct{})
	var n int
	var err error
	go func() {
		defer close(done)
		n, err = w.TryWrite(msg)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TryWrite waited for the reader")
	}
	if err != nil || n == 0 || n >= len(msg) {
		t.Fatalf("TryWrite of %d bytes to an unread socket: n %d, err %v", len(msg), n, err)
	}
	go func() {
		if _, err := w.Write(msg[n:]); err != nil {
			t.Error(err)
		}
		a.CloseWrite()
	}()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes (err %v), want the %d written in order", len(got), err, len(msg))
	}
}

// TestWritev: Writev's two slices arrive as one stream, in order, also when
// the socket takes them in many pieces (more than its buffers hold, so the
// writer waits for the reader in the middle of either slice), and it
// allocates nothing.
func TestWritev(t *testing.T) {
	a, b := testutil.TCPPair(t)
	w := NewWriter(a)
	head := []byte("header:")
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	var want bytes.Buffer
	done := make(chan error, 1)
	go func() {
		for _, p := range [][2][]byte{{head, body}, {body[:1<<20], head}, {head, []byte("x")}} {
			n, err := w.Writev(p[0], p[1])
			if err == nil && n != len(p[0])+len(p[1]) {
				err = fmt.Errorf("Writev wrote %d of %d bytes", n, len(p[0])+len(p[1]))
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- a.CloseWrite()
	}()
	want.Write(head)
	want.Write(body)
	want.Write(body[:1<<20])
	want.Write(head)
	want.Write(head)
	want.WriteString("x")
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes, want the %d written in order", len(got), want.Len())
	}
	c, d := testutil.TCPPair(t)
	wc, buf := NewWriter(c), make([]byte, 64)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := wc.Writev(head, head); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(d, buf[:2*len(head)]); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per Writev", n)
	}
}

// wrapped is a connection that wraps a TCP socket and says so, as an
// intercepted connection does.
type wrapped struct{ net.Conn }

func (w wrapped) TCPConn() *net.TCPConn { return w.Conn.(*net.TCPConn) }

// TestTCPConnOf: a TCP socket is found directly or through its wrapper,
// writes reach it through the wrapper, and anything else has none.
func TestTCPConnOf(t *testing.T) {
	a, b := testutil.TCPPair(t)
	if TCPConnOf(a) != a || TCPConnOf(wrapped{a}) != a {
		t.Fatal("TCP socket not found")
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if TCPConnOf(p) != nil || NewWriter(p) != nil {
		t.Fatal("a net.Pipe end taken for a TCP socket")
	}
	w := NewWriter(wrapped{a})
	if _, err := w.Write([]byte("through the wrapper")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("through the wrapper"))
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "through the wrapper" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestListenerWrapsAcceptedConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listener{Listener: ln}
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			_, _ = c.Write([]byte("ping"))
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("accepted %T, want *sockio.Conn", c)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v; want \"ping\"", got, err)
	}
	ln.Close()
	if c, err := l.Accept(); err == nil || c != nil {
		t.Fatalf("Accept on a closed listener: %v, %v; want nil and an error", c, err)
	}
}
