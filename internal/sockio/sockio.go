// Package sockio reads and writes non-blocking sockets with raw system
// calls, through a syscall.RawConn so that readiness waits, deadlines and
// Close work as they do for net.Conn.
//
// A read or write on a non-blocking socket never sleeps in the kernel, so
// it does not need to tell the Go scheduler it is in a system call: the
// goroutine keeps its processor, and the runtime's monitor thread, which
// takes processors away from system calls that last more than a few tens
// of microseconds and then polls at its fastest rate, is not woken by
// every loopback write. Between two processes on one machine, where a
// write also delivers the bytes to the reader, that monitor and the thread
// hand-offs it starts cost more CPU than the copy itself.
package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Read reads from the non-blocking descriptor fd into p, retrying on
// EINTR. It returns syscall.EAGAIN when nothing is there to read.
func Read(fd uintptr, p []byte) (int, error) {
	for {
		n, err := rawRead(fd, p)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// Writer writes to a TCP socket with raw write(2) calls, waiting for the
// socket to become writable when its buffer is full. It allocates nothing
// per write. A Writer serves one goroutine at a time.
type Writer struct {
	op     opErrors
	a      []byte // Writev: written before p
	p      []byte
	n      int
	err    error
	fn     func(fd uintptr) bool // w.try, made once
	nowait bool                  // TryWrite: stop at a full socket buffer
}

// NewWriter returns a Writer for c when c is a TCP socket, and nil
// otherwise.
func NewWriter(c net.Conn) *Writer {
	op, ok := newOpErrors(c)
	if !ok {
		return nil
	}
	w := &Writer{op: op}
	w.fn = w.try
	return w
}

// Write writes all of p. Its errors are those of net.Conn.Write:
// *net.OpError with Op "write", wrapping the deadline, closed-connection
// or system call error (as *os.SyscallError).
func (w *Writer) Write(p []byte) (int, error) {
	w.p, w.n, w.err = p, 0, nil
	err := w.op.rc.Write(w.fn)
	n := w.n
	if err == nil && w.err != nil {
		err = w.op.wrap("write", w.err)
	}
	w.a, w.p, w.err = nil, nil, nil
	return n, w.op.rename(err, "raw-write", "write")
}

// Writev writes a and then b, as Write(append(a, b...)) would, but
// without copying them together: with one writev(2) when the socket takes
// both at once.
func (w *Writer) Writev(a, b []byte) (int, error) {
	switch {
	case len(a) == 0:
		return w.Write(b)
	case len(b) == 0:
		return w.Write(a)
	}
	w.a = a
	return w.Write(b)
}

// TryWrite writes what of p the socket takes now, without waiting: n may
// be short of len(p) with a nil error when the socket's buffer is full.
// Its errors are Write's.
func (w *Writer) TryWrite(p []byte) (int, error) {
	w.nowait = true
	n, err := w.Write(p)
	w.nowait = false
	return n, err
}

func (w *Writer) try(fd uintptr) bool {
	for w.n < len(w.a)+len(w.p) {
		var k int
		var e error
		if w.n < len(w.a) {
			k, e = rawWritev(fd, w.a[w.n:], w.p)
		} else {
			k, e = rawWrite(fd, w.p[w.n-len(w.a):])
		}
		switch e {
		case nil:
			w.n += k
		case syscall.EINTR:
		case syscall.EAGAIN:
			return w.nowait
		default:
			w.err = e
			return true
		}
	}
	return true
}

// Reader reads from a TCP socket with raw read(2) calls, waiting until
// bytes, the end of the stream or an error are there: net.Conn.Read
// without a system-call transition. It allocates nothing per read. A
// Reader serves one goroutine at a time.
type Reader struct {
	op  opErrors
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // r.try, made once
}

// NewReader returns a Reader for c when c is a TCP socket, and nil
// otherwise.
func NewReader(c net.Conn) *Reader {
	op, ok := newOpErrors(c)
	if !ok {
		return nil
	}
	r := &Reader{op: op}
	r.fn = r.try
	return r
}

// Read reads into p; io.EOF at the end of the stream. Other errors are
// those of net.Conn.Read (*net.OpError with Op "read").
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.err = p, 0, nil
	err := r.op.rc.Read(r.fn)
	n, rerr := r.n, r.err
	r.p, r.err = nil, nil
	switch {
	case err != nil:
		return 0, r.op.rename(err, "raw-read", "read")
	case rerr != nil:
		return 0, r.op.wrap("read", rerr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *Reader) try(fd uintptr) bool {
	r.n, r.err = Read(fd, r.p)
	return r.err != syscall.EAGAIN
}

// opErrors is a socket's RawConn and what its errors name, so that they
// read as net.Conn's do (the access log shows them).
type opErrors struct {
	rc            syscall.RawConn
	local, remote net.Addr
}

func newOpErrors(c net.Conn) (opErrors, bool) {
	rc := RawConnOf(c)
	if rc == nil {
		return opErrors{}, false
	}
	return opErrors{rc: rc, local: c.LocalAddr(), remote: c.RemoteAddr()}, true
}

// wrap returns the system call error e as net.Conn's Read or Write would.
func (o *opErrors) wrap(op string, e error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: o.local, Addr: o.remote, Err: os.NewSyscallError(op, e)}
}

// rename gives an error of the RawConn (a deadline, a closed connection)
// the Op net.Conn's Read or Write would have given it.
func (o *opErrors) rename(err error, from, to string) error {
	if oe, ok := err.(*net.OpError); ok && oe.Op == from {
		e := *oe
		e.Op = to
		return &e
	}
	return err
}

// Conn reads and writes a TCP socket with a Reader and a Writer. Other
// methods are the socket's. Concurrent Reads (or Writes) are serialized.
type Conn struct {
	*net.TCPConn
	rmu sync.Mutex
	r   *Reader
	wmu sync.Mutex
	w   *Writer
}

// Wrap returns c as a *Conn when it is a *net.TCPConn, and c otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	r, w := NewReader(c), NewWriter(c)
	if r == nil || w == nil {
		return c
	}
	return &Conn{TCPConn: tc, r: r, w: w}
}

// TCPConnOf returns the TCP socket c is, or wraps: c itself when it is a
// *net.TCPConn, what its TCPConn method returns when it has one (an
// intercepted connection that reports another local address), and nil
// otherwise.
func TCPConnOf(c net.Conn) *net.TCPConn {
	switch c := c.(type) {
	case *net.TCPConn:
		return c
	case interface{ TCPConn() *net.TCPConn }:
		return c.TCPConn()
	}
	return nil
}

// RawConnOf returns the RawConn of the TCP socket c is or wraps (see
// TCPConnOf; non-blocking, as every socket of package net is), and nil
// otherwise.
func RawConnOf(c net.Conn) syscall.RawConn {
	tc := TCPConnOf(c)
	if tc == nil {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// Read reads from c's socket (see Reader).
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.r.Read(p)
}

// Write writes to c's socket (see Writer).
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.Write(p)
}

// Writev writes a and then b to c's socket (see Writer.Writev).
func (c *Conn) Writev(a, b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.Writev(a, b)
}

// Listener wraps a listener so that the TCP connections it accepts read and
// write with raw system calls (see Wrap).
type Listener struct {
	net.Listener
}

// Accept waits for the next connection and returns it wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
