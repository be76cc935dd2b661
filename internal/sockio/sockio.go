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

// Writer writes to the socket behind a syscall.RawConn with raw write(2)
// calls, waiting for the socket to become writable when its buffer is full.
// It allocates nothing per write. A Writer serves one goroutine at a time.
type Writer struct {
	rc  syscall.RawConn
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // w.try, made once
}

// NewWriter returns a Writer for the socket behind rc, which must be
// non-blocking (as every socket of package net is).
func NewWriter(rc syscall.RawConn) *Writer {
	w := &Writer{rc: rc}
	w.fn = w.try
	return w
}

// Write writes all of p. Errors are those of net.Conn.Write without the
// *net.OpError wrapping: deadline and closed-connection errors from the
// RawConn, and system call errors as *os.SyscallError.
func (w *Writer) Write(p []byte) (int, error) {
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.fn)
	n := w.n
	if err == nil {
		err = w.err
	}
	w.p, w.err = nil, nil
	return n, err
}

func (w *Writer) try(fd uintptr) bool {
	for w.n < len(w.p) {
		k, e := rawWrite(fd, w.p[w.n:])
		switch e {
		case nil:
			w.n += k
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.err = os.NewSyscallError("write", e)
			return true
		}
	}
	return true
}

// Reader reads from the socket behind a syscall.RawConn with raw read(2)
// calls, waiting until bytes, the end of the stream or an error are there:
// net.Conn.Read without a system-call transition. It allocates nothing per
// read. A Reader serves one goroutine at a time.
type Reader struct {
	rc  syscall.RawConn
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // r.try, made once
}

// NewReader returns a Reader for the socket behind rc, which must be
// non-blocking.
func NewReader(rc syscall.RawConn) *Reader {
	r := &Reader{rc: rc}
	r.fn = r.try
	return r
}

// Read reads into p; io.EOF at the end of the stream.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.err = p, 0, nil
	err := r.rc.Read(r.fn)
	n, rerr := r.n, r.err
	r.p, r.err = nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *Reader) try(fd uintptr) bool {
	r.n, r.err = Read(fd, r.p)
	return r.err != syscall.EAGAIN
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

// Wrap returns c as a *Conn when it is a TCP socket, and c otherwise.
func Wrap(c net.Conn) net.Conn {
	rc := RawConnOf(c)
	if rc == nil {
		return c
	}
	return &Conn{TCPConn: c.(*net.TCPConn), r: NewReader(rc), w: NewWriter(rc)}
}

// RawConnOf returns c's RawConn when c is a TCP socket (non-blocking, as
// every socket of package net is), and nil otherwise.
func RawConnOf(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
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
